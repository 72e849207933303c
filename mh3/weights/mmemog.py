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

The trained emotion teacher is a saved model of kind `emotion` (mh3.saved_model): `save_model`
writes it, `mh3.load` reads it back as an
`EmotionPredictor` that applies the training-time preprocessing and tokenizer to raw texts.
"""

import io
import os
import pickle
import zipfile

import jax
import numpy as np
from absl import logging
from flax import traverse_util

from mh3 import data, files, saved_model
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


# ---- The emotion teacher as a saved model (mh3.saved_model, kind `emotion`) ----
#
# `<folder>/` holds `mh3.json` (classes, protocol, data fingerprint, max_len, preprocessing,
# tokenizer settings and `model`: the EmotionMLP settings), `variables.safetensors` (the
# params and the frozen table, flattened to `params/dense_0/kernel`, `table/embedding`, ...)
# and the tokenizer files, added tokens included. There is no HF class for this model, so the
# weights are a plain safetensors file any framework can read.

VARIABLES = "variables.safetensors"
# EmotionMLP fields that rebuild the module (dtype stays the float32 default).
MODEL_FIELDS = (
    "num_labels", "vocab_size", "embed_dim", "max_length", "num_layers", "hidden_size",
    "dropout_rate", "output_relu", "pad_token_id",
)  # fmt: skip
INPUTS = ("input_ids",)  # the MLP reads ids only: no attention mask, as in the paper


def save_model(
    folder: str,
    variables: dict,
    *,
    model,
    tokenizer,
    classes,
    protocol: str,
    data_fingerprint: str,
) -> None:
    """Writes a trained emotion teacher as a saved model that `mh3.load` reads back.

    Args:
      folder: the model folder (`<workdir>/model`).
      variables: `{'params': ..., 'table': {'embedding': ...}}` of the trained EmotionMLP.
      model: the EmotionMLP (its fields are recorded, so the loader rebuilds it).
      tokenizer: the mh3.data.Tokenizer the teacher was trained with.
      classes: class names in label order.
      protocol: the config's protocol.
      data_fingerprint: the training dataset's fingerprint.
    """
    from safetensors.numpy import save_file

    flat = {
        k: np.ascontiguousarray(np.asarray(v))
        for k, v in traverse_util.flatten_dict(jax.device_get(variables), sep="/").items()
    }
    files.atomic_write(os.path.join(folder, VARIABLES), lambda tmp: save_file(flat, tmp))
    saved_model.write_meta(
        folder,
        kind="emotion",
        classes=classes,
        protocol=protocol,
        data_fingerprint=data_fingerprint,
        **saved_model.save_tokenizer(folder, tokenizer, model.max_length),
        inputs=list(INPUTS),
        model={k: getattr(model, k) for k in MODEL_FIELDS},
        weights=VARIABLES,
    )


class EmotionPredictor(saved_model.TextPredictorBase):
    """A saved emotion teacher: raw texts or dataset examples in, (N, C) logits out.

    Attributes:
      model: the rebuilt EmotionMLP.
      variables: its params and frozen table.
      tokenizer: the saved tokenizer (added tokens included).
      max_len: the training max length (inputs are cut to it).
      batch_size: rows per forward pass, a multiple of the local device count.
    """

    bucketed = False  # the MLP reads the whole flattened (max_len x dim) sequence

    def __init__(self, folder: str, meta: dict, batch_size: int | None = None):
        from safetensors.numpy import load_file

        from mh3.models.emotion import EmotionMLP

        super().__init__(folder, meta, batch_size)
        self.model = EmotionMLP(**meta["model"])
        self.max_len = int(meta["max_len"])
        path = os.path.join(folder, meta["weights"])
        if not os.path.exists(path):
            raise UserError(f"{folder}: {meta['weights']} is missing; re-run teacher_emotion")
        self.variables = traverse_util.unflatten_dict(load_file(path), sep="/")
        _check_shapes(folder, self.model, self.variables)
        self.tokenizer = data.load_tokenizer(folder)
        if self.tokenizer.vocab_size > self.model.vocab_size:
            raise UserError(
                f"{folder}: the tokenizer has {self.tokenizer.vocab_size} ids but the table "
                f"{self.model.vocab_size} rows; re-run teacher_emotion"
            )
        self._set_model(self.model.apply, self.variables, INPUTS)


def _check_shapes(folder: str, model, variables: dict) -> None:
    """Raises a UserError unless `variables` has exactly the model's names and shapes."""
    from mh3.models.emotion import example_batch

    template = jax.eval_shape(
        lambda: model.init(jax.random.PRNGKey(0), example_batch(model.max_length))
    )
    want = {k: v.shape for k, v in traverse_util.flatten_dict(template, sep="/").items()}
    got = {k: v.shape for k, v in traverse_util.flatten_dict(variables, sep="/").items()}
    if want != got:
        wrong = sorted(k for k in want.keys() | got.keys() if want.get(k) != got.get(k))
        raise UserError(
            f"{folder}: {VARIABLES} does not fit the model in {saved_model.META} (names or "
            f"shapes differ at {wrong[:3]}); re-run teacher_emotion"
        )
