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

`load(folder)` reads any of them back as a `Predictor` of the kind's class (KINDS).
"""

import dataclasses
import importlib
import os
from collections.abc import Callable, Iterable, Sequence

import numpy as np

from mh3 import __version__, data, files
from mh3.errors import UserError
from mh3.train import loop, parallel

FORMAT = "mh3-saved-model"
FORMAT_VERSION = 1
META = "mh3.json"
# What a text kind's inputs went through before tokenisation (SPEC Stage 0); in mh3.json.
PREPROCESSING = "mh3.data.preprocess: de-identify URLs/emails/users, keep emojis, lower-case"
# kind -> (module, Predictor class) that writes and reads it (imported only when loaded).
KINDS = {
    "text": ("mh3.train.export", "TextPredictor"),
    "audio": ("mh3.audio.teacher", "AudioPredictor"),
    "emotion": ("mh3.weights.mmemog", "EmotionPredictor"),
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


def save_tokenizer(folder: str, tokenizer: data.Tokenizer, max_len: int) -> dict:
    """Writes a text kind's tokenizer (added tokens included, truncating at `max_len` as in
    training) into `folder`; returns the mh3.json settings that describe its inputs."""
    tokenizer.hf.model_max_length = int(max_len)
    tokenizer.save(folder)
    return {
        "max_len": int(max_len),
        "preprocessing": PREPROCESSING,
        "tokenizer": {"vocab_size": tokenizer.vocab_size, "added_tokens": list(tokenizer.added)},
    }


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

    Subclasses load the model, call `_set_model`, and implement `logits(inputs)`; inputs are
    raw texts for text kinds, and waveforms or wav paths for audio. The training-time
    preprocessing is applied inside. Forward passes are jitted and pmapped over every local
    device, compiled once per batch shape for the predictor's lifetime.
    """

    def __init__(self, folder: str, meta: dict, batch_size: int | None = None):
        self.folder = folder
        self.meta = meta
        self.classes = tuple(meta["classes"])
        self.kind = meta["kind"]
        # Whole batches split evenly over the local devices (pmap needs equal shares).
        n_dev = parallel.device_count()
        self.batch_size = -(-(batch_size or 32) // n_dev) * n_dev

    def _set_model(self, apply_fn: Callable, variables, input_keys: tuple[str, ...]) -> None:
        self._forward = loop.forward_fn(apply_fn, input_keys)
        self._replicated = parallel.replicate(variables)

    def _run(self, batches: Iterable[dict], n: int) -> np.ndarray:
        """(n, C) logits of eval batches carrying `mask` and `index` (0..n-1)."""
        if n == 0:
            return np.zeros((0, len(self.classes)), np.float32)
        return loop.predict_logits(self._forward, self._replicated, batches, n)

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


class TextPredictorBase(Predictor):
    """The text kinds: raw texts -> `mh3.data.preprocess` -> the saved tokenizer -> logits.

    Subclasses set `tokenizer`, `max_len` and `bucketed` (pad batches to a few lengths; False
    for models that read a fixed max_len) and call `_set_model`.
    """

    tokenizer: data.Tokenizer
    max_len: int
    bucketed: bool = True

    def logits(self, texts: Sequence[str]) -> np.ndarray:
        """(N, C) float32 logits of raw texts, preprocessed exactly as in training."""
        examples = [
            data.Example(id=str(i), text=data.preprocess(t), raw=t, label=0, split="test", index=i)
            for i, t in enumerate(texts)
        ]
        return self.logits_examples(examples)

    def logits_examples(self, examples: Sequence[data.Example]) -> np.ndarray:
        """(N, C) float32 logits of mh3.data examples (`text` already preprocessed); row i is
        `examples[i]` (for a whole Dataset's examples: example index i)."""
        if not examples:
            return np.zeros((0, len(self.classes)), np.float32)
        encoded = data.encode(self.tokenizer, examples, self.max_len)
        # Rows by position, so any list of examples fits, not only a whole dataset.
        encoded = dataclasses.replace(encoded, index=np.arange(len(examples), dtype=np.int32))
        buckets = (
            data.bucket_lengths(encoded.lengths, self.max_len, 6, 8) if self.bucketed else None
        )
        batches = data.batches(
            encoded, self.batch_size, pad_id=self.tokenizer.pad_id, train=False, buckets=buckets
        )
        return self._run(batches, len(examples))


def load(folder: str, *, batch_size: int | None = None) -> Predictor:
    """Loads any mh3 saved model as a Predictor (`predict(inputs)` -> probabilities).

    Args:
      folder: a saved model (`<workdir>/model`).
      batch_size: inputs per forward pass (rounded up to a multiple of the local devices);
        None = the kind's default.
    """
    meta = read_meta(folder)
    module, name = KINDS[meta["kind"]]
    return getattr(importlib.import_module(module), name)(folder, meta, batch_size=batch_size)
