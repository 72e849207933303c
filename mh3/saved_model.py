"""The saved-model format (DESIGN, CONTRACT: saved models) and `mh3.load`.

Every training stage writes `<workdir>/model/` (the student: `<workdir>/run<r>/model/`):
`mh3.json` plus the weights.

`mh3.json` holds: `format` ("mh3-saved-model") and `format_version`; `kind` (`text`, `audio`
or `emotion`); `classes` (names in label order); `protocol`; `data_fingerprint` (of the data
it was trained on); `mh3_version`; and the kind's own settings: the preprocessing, tokenizer
and `max_len` of text kinds, the fbank settings and normalisation statistics of audio.

The weights: a text model is also a Hugging Face `save_pretrained` folder (config.json with
id2label, model.safetensors, tokenizer files with the added tokens), loadable with
`AutoModelForSequenceClassification` and `AutoTokenizer`; the audio teacher an
`ASTForAudioClassification` folder; the emotion teacher mh3's own files (it has no HF class).

`load(folder)` reads any of them back as a `Predictor`; each kind's module provides
`load_predictor(folder, meta)`.
"""

import importlib
import os
from collections.abc import Sequence

import numpy as np

from mh3 import __version__, files
from mh3.errors import UserError

FORMAT = "mh3-saved-model"
FORMAT_VERSION = 1
META = "mh3.json"
# kind -> the module that writes and reads it (imported only when that kind is loaded).
KINDS = {
    "text": "mh3.train.export",
    "audio": "mh3.audio.teacher",
    "emotion": "mh3.weights.mmemog",
}


def write_meta(
    folder: str,
    *,
    kind: str,
    classes: Sequence[str],
    protocol: str,
    data_fingerprint: str,
    **settings,
) -> None:
    """Writes `<folder>/mh3.json` (module docstring); `settings` are the kind's own keys."""
    if kind not in KINDS:
        raise ValueError(f"unknown saved-model kind {kind!r}")
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "kind": kind,
        "classes": list(classes),
        "protocol": protocol,
        "data_fingerprint": data_fingerprint,
        "mh3_version": __version__,
        **settings,
    }
    files.write_json(os.path.join(folder, META), meta)


def read_meta(folder: str) -> dict:
    """`<folder>/mh3.json`, checked.

    Raises:
      UserError: the folder is not an mh3 saved model (or one of a newer format).
    """
    path = os.path.join(folder, META)
    if not os.path.isdir(folder):
        raise UserError(f"{folder}: no such folder; pass a saved model (<workdir>/model)")
    if not os.path.exists(path):
        raise UserError(
            f"{folder}: not an mh3 saved model (no {META}); pass the model/ folder a training "
            "stage wrote, e.g. runs/student-demo/run0/model"
        )
    try:
        meta = files.read_json(path)
    except ValueError as e:
        raise UserError(f"{path}: not valid JSON ({e}); re-run the stage that wrote it") from None
    if meta.get("format") != FORMAT or meta.get("kind") not in KINDS:
        raise UserError(f"{path}: not an mh3 saved-model record (format/kind missing)")
    if meta.get("format_version", 0) > FORMAT_VERSION:
        raise UserError(
            f"{path}: format version {meta['format_version']} is newer than this mh3 "
            f"({FORMAT_VERSION}); upgrade mh3"
        )
    return meta


class Predictor:
    """A loaded model: `predict(inputs) -> (N, C)` class probabilities, row i for input i.

    Subclasses implement `logits(inputs)`; inputs are raw texts for text kinds, and waveforms
    or wav paths for audio. The training-time preprocessing is applied inside.
    """

    def __init__(self, folder: str, meta: dict):
        self.folder = folder
        self.meta = meta
        self.classes = tuple(meta["classes"])
        self.kind = meta["kind"]

    def logits(self, inputs) -> np.ndarray:  # pragma: no cover - every kind overrides it
        raise NotImplementedError

    def predict(self, inputs) -> np.ndarray:
        """Class probabilities (softmax of the logits), float32 (N, C)."""
        z = self.logits(inputs).astype(np.float64)
        z = np.exp(z - z.max(-1, keepdims=True))
        return (z / z.sum(-1, keepdims=True)).astype(np.float32)

    def check_classes(self, classes: Sequence[str], where: str) -> None:
        """Raises a UserError when `classes` (e.g. a dataset's) differ from the model's."""
        if list(classes) != list(self.classes):
            raise UserError(
                f"{self.folder}: the model's classes {list(self.classes)} differ from "
                f"{where}'s {list(classes)}; use a model trained on this dataset"
            )


def load(folder: str) -> Predictor:
    """Loads any mh3 saved model as a Predictor (`predict(inputs)` -> probabilities)."""
    meta = read_meta(folder)
    module = importlib.import_module(KINDS[meta["kind"]])
    return module.load_predictor(folder, meta)
