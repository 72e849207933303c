"""MM-EMOG emotion-embedding tables: our `.npz` export, the authors' pickle, the teacher table.

A table is `(vocab_map, weights)`: `vocab_map` maps a word piece to its row of `weights`
(V x D float32). Two files hold one:
- ours, `.npz` (written by `save`): `tokens` (the pieces in row order, a unicode array) and
  `weights`; read without pickle;
- the authors' release, a pickle of `{'vocab_map': {token: row}, 'weights': V x 768}` where
  `weights` is a torch tensor or a numpy array. Pickles can run code, so it is read with an
  unpickler that only builds dicts, numpy arrays and torch tensors (tensor storage itself read
  by `torch.load(weights_only=True)`); anything else is refused. A `torch.save` zip archive of
  the same dict is read with `torch.load(weights_only=True)`.

`teacher_table` turns a table into the emotion teacher's frozen embedding: one row per id of
the teacher's tokenizer, MM-EMOG rows where the piece is in `vocab_map`, uniform [0, 1) rows
drawn from seed 123 elsewhere (SPEC stage 3).
"""

import io
import os
import pickle
import zipfile

import jax
import numpy as np
from absl import logging

from mh3 import files
from mh3.errors import UserError

RANDOM_ROWS_SEED = 123  # the paper's seed for the rows MM-EMOG does not cover


def save(path: str, vocab_map: dict, weights: np.ndarray) -> None:
    """Writes `{vocab_map, weights}` as our `.npz` (atomically)."""
    weights = np.asarray(weights, np.float32)
    tokens = sorted(vocab_map, key=vocab_map.get)
    if [vocab_map[t] for t in tokens] != list(range(weights.shape[0])):
        raise ValueError("vocab_map rows must be exactly 0..V-1, one per row of weights")

    def write(tmp):
        with open(tmp, "wb") as f:
            np.savez(f, tokens=np.asarray(tokens, dtype=np.str_), weights=weights)

    files.atomic_write(path, write)


def load(path: str) -> tuple[dict, np.ndarray]:
    """Reads a table from our `.npz` or from the authors' pickle / torch file.

    Returns:
      (vocab_map token -> row, weights float32 V x D).

    Raises:
      UserError: missing file, unsafe or unreadable pickle, or a malformed table.
    """
    if not os.path.isfile(path):
        raise UserError(f"emotion-embedding table {path!r} does not exist; check the path")
    if zipfile.is_zipfile(path) and path.endswith(".npz"):
        try:
            with np.load(path, allow_pickle=False) as data:
                tokens, weights = data["tokens"], data["weights"]
        except (KeyError, ValueError) as e:
            raise UserError(f"{path}: not an MM-EMOG .npz (tokens, weights): {e}") from None
        return _check(path, {str(t): i for i, t in enumerate(tokens)}, weights)
    if zipfile.is_zipfile(path):
        import torch  # a torch.save archive

        try:
            data = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # torch raises many types for bad or unsafe archives
            raise UserError(f"{path}: cannot read this torch file safely ({e})") from None
    else:
        with open(path, "rb") as f:
            try:
                data = _SafeUnpickler(f).load()
            except UserError as e:
                raise UserError(f"{path}: {e}") from None
            except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as e:
                raise UserError(f"{path}: not a readable MM-EMOG pickle ({e})") from None
    if not isinstance(data, dict) or not {"vocab_map", "weights"} <= set(data):
        raise UserError(f"{path}: expected a dict with 'vocab_map' and 'weights'")
    return _check(path, data["vocab_map"], data["weights"])


def _check(path: str, vocab_map, weights) -> tuple[dict, np.ndarray]:
    if hasattr(weights, "detach"):  # a torch tensor
        weights = weights.detach().cpu().float().numpy()
    weights = np.asarray(weights, np.float32)
    if weights.ndim != 2 or not weights.shape[0]:
        raise UserError(f"{path}: weights must be a V x D matrix, got shape {weights.shape}")
    if not isinstance(vocab_map, dict) or not vocab_map:
        raise UserError(f"{path}: vocab_map must be a non-empty dict token -> row")
    vocab_map = {str(k): int(v) for k, v in vocab_map.items()}
    bad = [k for k, v in vocab_map.items() if not 0 <= v < weights.shape[0]]
    if bad:
        raise UserError(
            f"{path}: vocab_map rows of {bad[:3]} fall outside weights ({weights.shape[0]} rows)"
        )
    return vocab_map, weights


def _load_storage_bytes(data: bytes):
    import torch

    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


def _allowed(module: str, name: str):
    """The globals a pickled {vocab_map, weights} dict needs, and nothing else."""
    if (module, name) == ("collections", "OrderedDict"):
        import collections

        return collections.OrderedDict
    if module in ("numpy", "numpy.core.multiarray", "numpy._core.multiarray"):
        # numpy 1.x pickles name numpy.core, 2.x numpy._core: the same functions.
        safe = {"ndarray": np.ndarray, "dtype": np.dtype}
        if name in safe:
            return safe[name]
        if name in ("_reconstruct", "scalar"):
            return getattr(np._core.multiarray, name)
    if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
        import torch

        return torch._utils._rebuild_tensor_v2
    if (module, name) == ("torch.storage", "_load_from_bytes"):
        # torch's own version loads with weights_only=False; ours keeps the safe loader.
        return _load_storage_bytes
    return None


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        found = _allowed(module, name)
        if found is None:
            raise UserError(
                f"refusing to unpickle {module}.{name}: an MM-EMOG pickle holds only a dict, "
                "numpy arrays or torch tensors"
            )
        return found


def teacher_table(
    vocab_map: dict, weights: np.ndarray, tokenizer, *, seed: int = RANDOM_ROWS_SEED
) -> np.ndarray:
    """The emotion teacher's frozen embedding, one row per id of `tokenizer`.

    Args:
      vocab_map: token -> row of `weights`.
      weights: the MM-EMOG table (V x D).
      tokenizer: the teacher's tokenizer, added tokens included.
      seed: seed of the uniform [0, 1) rows for pieces MM-EMOG does not cover.

    Returns:
      float32 (len(tokenizer), D).

    Raises:
      UserError: no piece of the tokenizer is in `vocab_map` (a table for another tokenizer).
    """
    vocab = tokenizer.get_vocab()
    size = max(len(tokenizer), max(vocab.values()) + 1)
    # One draw for the whole matrix, then MM-EMOG rows written over it: the random rows of a
    # token do not depend on which other tokens the table covers.
    table = np.random.RandomState(seed).uniform(size=(size, weights.shape[1])).astype(np.float32)
    ids = [(i, vocab_map[t]) for t, i in vocab.items() if t in vocab_map]
    if not ids:
        raise UserError(
            "the MM-EMOG table shares no word piece with the teacher's tokenizer; build the "
            "table with the same tokenizer (emotion.tokenizer)"
        )
    rows, src = np.asarray(ids).T
    table[rows] = weights[src]
    logging.info(
        "emotion table: %d of %d tokenizer rows from MM-EMOG (%d table rows)",
        len(ids),
        size,
        weights.shape[0],
    )
    return table


# The emotion teacher's export: `<folder>/model.json` (EmotionMLP settings and class names) and
# `<folder>/variables.msgpack` ({'params': ..., 'table': {'embedding': ...}}, flax msgpack).
TEACHER_FILES = ("model.json", "variables.msgpack")


def save_teacher(folder: str, model, variables: dict, classes) -> None:
    """Writes a trained emotion teacher so that `load_teacher` rebuilds it exactly."""
    from flax import serialization

    settings = {
        k: getattr(model, k)
        for k in (
            "num_labels",
            "vocab_size",
            "embed_dim",
            "max_length",
            "num_layers",
            "hidden_size",
            "dropout_rate",
            "output_relu",
            "pad_token_id",
        )
    }
    blob = serialization.msgpack_serialize(jax.tree.map(np.asarray, variables))

    def write(tmp):
        with open(tmp, "wb") as f:
            f.write(blob)

    files.atomic_write(os.path.join(folder, "variables.msgpack"), write)
    files.write_json(
        os.path.join(folder, "model.json"),
        {"model": "EmotionMLP", "settings": settings, "classes": list(classes)},
    )


def load_teacher(folder: str):
    """Reads a `save_teacher` folder.

    Returns:
      (EmotionMLP, variables for `model.apply(variables, batch, train=False)`, class names).

    Raises:
      UserError: the folder lacks the files or they do not fit together.
    """
    from flax import serialization

    from mh3.models.emotion import EmotionMLP

    missing = [f for f in TEACHER_FILES if not os.path.exists(os.path.join(folder, f))]
    if missing:
        raise UserError(f"{folder}: not an emotion-teacher export (missing {missing})")
    meta = files.read_json(os.path.join(folder, "model.json"))
    model = EmotionMLP(**meta["settings"])
    with open(os.path.join(folder, "variables.msgpack"), "rb") as f:
        variables = serialization.msgpack_restore(f.read())
    table = variables["table"]["embedding"]
    if table.shape != (model.vocab_size, model.embed_dim):
        raise UserError(
            f"{folder}: table shape {table.shape} does not fit the model "
            f"({model.vocab_size} x {model.embed_dim})"
        )
    return model, variables, tuple(meta["classes"])
