"""Teacher soft labels: each frozen teacher runs once over every example, cached on disk.

A teacher's logits for all examples (train, val and test, in the dataset's global order) are
computed with a jitted, pmapped forward pass in eval mode and stored under the student's
workdir in `soft_labels/<teacher>-<key>.npz`, where the key hashes the teacher's exported
saved model folder and the dataset's fingerprint: retraining a teacher or changing the data makes a
new entry, and a rerun reads the cache instead of running the teacher again. Teachers are
deterministic in eval mode, so the cached targets are exactly the per-batch ones the notebooks
computed on the fly.
"""

import hashlib
import os
from collections.abc import Callable

import numpy as np
from absl import logging

from mh3 import data, files, saved_model


def _folder_hash(folder: str) -> str:
    digest = hashlib.sha256()
    for root, dirs, names in os.walk(folder):
        dirs.sort()
        for name in sorted(names):
            path = os.path.join(root, name)
            digest.update(os.path.relpath(path, folder).encode())
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
    return digest.hexdigest()


def soft_labels(
    name: str,
    params_dir: str,
    dataset: data.Dataset,
    predict: Callable[[], np.ndarray],
    cache_dir: str,
) -> np.ndarray:
    """A teacher's (N, C) logits for every example, from the cache or computed and cached.

    Args:
      name: the teacher's name in the student config (file-name prefix).
      params_dir: the teacher's exported parameters (their content is part of the key).
      dataset: the data the logits are for (its fingerprint is part of the key).
      predict: computes the logits when they are not cached.
      cache_dir: `<student workdir>/soft_labels`.
    """
    key = hashlib.sha256(f"{_folder_hash(params_dir)}:{dataset.fingerprint}".encode()).hexdigest()[
        :16
    ]
    path = os.path.join(cache_dir, f"{name}-{key}.npz")
    if os.path.exists(path):
        with np.load(path) as cached:
            return cached["logits"]
    # The forward pass shows its own progress bar (mh3.train.loop.predict_logits).
    logging.info(
        "soft labels of %s: running the teacher on %d examples", name, len(dataset.examples)
    )
    logits = predict()
    if logits.shape != (len(dataset.examples), len(dataset.classes)):
        raise ValueError(f"teacher {name} gave logits of shape {logits.shape}")

    def write(tmp):
        with open(tmp, "wb") as f:
            np.savez(f, logits=logits, classes=np.asarray(dataset.classes))

    files.atomic_write(path, write)
    logging.info("cached soft labels of %s in %s", name, path)
    return logits


def teacher_logits(results: dict, dataset: data.Dataset, *, batch_size: int) -> np.ndarray:
    """(N, C) logits of a finished teacher stage's saved model (`results['model']`) for every
    example of `dataset`, in global order; an audio teacher reads `results['wav_dir']`."""
    teacher = saved_model.load(results["model"], batch_size=batch_size)
    teacher.check_classes(dataset.classes, f"dataset {dataset.name}")
    where = (results["wav_dir"],) if teacher.kind == "audio" else ()
    return teacher.logits_examples(dataset.examples, *where)
