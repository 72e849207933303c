"""HF Audio Spectrogram Transformer checkpoints <-> mh3.models.ast settings and parameter names.

Two tensor-name schemes are read: the one of the published checkpoints (transformers 4,
`encoder.layer.N.attention.attention.query`, `intermediate.dense`, ...) and the one
transformers 5 writes (`layers.N.attention.q_proj`, `mlp.fc1`, ...). `hf_key` writes the
first: our module uses those names, and both transformers 4 and 5 load them (5 renames them on
load, as it does for the published checkpoints).

`max_length` (frames) sets the patch grid and so the size of the position table. When it
differs from the checkpoint's, the `position_table` option says what the table becomes:
- `resample` (clean default): the pretrained table's patch rows, laid out as a
  (frequency, time) grid, are linearly interpolated along time to the new grid; the CLS and
  distillation rows are kept;
- `zeros`: a zero table that training has to learn, which is what the paper's notebooks ended
  up with (the pretrained table did not fit and was left at its initial zeros).
"""

import re

import jax.numpy as jnp
import numpy as np
from absl import logging

from mh3.errors import UserError
from mh3.models.ast import ASTClassifier, ASTConfig

MODEL_TYPES = ("audio-spectrogram-transformer",)
MODULE = ASTClassifier
ARCHITECTURE = "ASTForAudioClassification"
HEADS = ("classifier",)
POSITION_TABLES = ("resample", "zeros")

_FIELDS = (
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "hidden_act",
    "hidden_dropout_prob",
    "attention_probs_dropout_prob",
    "initializer_range",
    "layer_norm_eps",
    "patch_size",
    "frequency_stride",
    "time_stride",
    "max_length",
    "num_mel_bins",
)
OVERRIDES = {
    k: k
    for k in (
        "num_hidden_layers",
        "num_attention_heads",
        "hidden_act",
        "hidden_dropout_prob",
        "attention_probs_dropout_prob",
        "max_length",
    )
}
OVERRIDES["position_table"] = None  # a loading option, not a model setting

# transformers 5 names -> the transformers 4 (published checkpoint) names our module uses.
_RENAMES = [
    (r"^layers\.", "encoder.layer."),
    (r"\.attention\.q_proj\.", ".attention.attention.query."),
    (r"\.attention\.k_proj\.", ".attention.attention.key."),
    (r"\.attention\.v_proj\.", ".attention.attention.value."),
    (r"\.attention\.o_proj\.", ".attention.output.dense."),
    (r"\.mlp\.fc1\.", ".intermediate.dense."),
    (r"\.mlp\.fc2\.", ".output.dense."),
]


def strip_prefix(key: str) -> str:
    return re.sub(r"^audio_spectrogram_transformer\.", "", key)


def make_config(hf: dict, tensors: dict, num_labels: int | None, overrides: dict) -> ASTConfig:
    """Module settings from config.json, the checkpoint's head and the overrides."""
    if not hf.get("qkv_bias", True):
        raise UserError("AST checkpoints without Q/K/V biases (qkv_bias=false) are not supported")
    fields = {k: hf[k] for k in _FIELDS if k in hf}
    fields.update({k: v for k, v in overrides.items() if OVERRIDES[k]})
    head = (
        tensors["classifier.dense.weight"].shape[0] if "classifier.dense.weight" in tensors else 0
    )
    fields["num_labels"] = head if num_labels is None else num_labels
    try:
        return ASTConfig(**fields)
    except ValueError as e:
        raise UserError(f"bad AST settings: {e}") from None


def adapt_tensors(tensors: dict, hf: dict, config: ASTConfig, overrides: dict) -> dict:
    """Fits the checkpoint's position table to `config.max_length` (see module docstring)."""
    how = overrides.get("position_table", "resample")
    if how not in POSITION_TABLES:
        raise UserError(f"position_table={how!r}; choose one of {POSITION_TABLES}")
    key = "embeddings.position_embeddings"
    table = tensors.get(key)
    if table is None or table.shape[1] == config.num_positions:
        return tensors
    old = ASTConfig(**{k: hf[k] for k in _FIELDS if k in hf})
    f, t_old = old.grid
    f_new, t_new = config.grid
    if f != f_new or table.shape[1] != old.num_positions:
        raise UserError(
            f"position table {table.shape} does not fit the checkpoint's own config "
            f"({old.num_positions} positions)"
        )
    if how == "zeros":
        new = np.zeros((1, config.num_positions, table.shape[2]), np.float32)
    else:
        grid = table[0, 2:].reshape(f, t_old, -1)
        # Linear interpolation along time at the new patch centres (end points aligned).
        src = np.linspace(0, t_old - 1, t_new)
        lo = np.floor(src).astype(int)
        hi = np.minimum(lo + 1, t_old - 1)
        w = (src - lo)[None, :, None]
        resampled = grid[:, lo] * (1 - w) + grid[:, hi] * w
        new = np.concatenate([table[:, :2], resampled.reshape(1, f * t_new, -1)], axis=1)
    logging.info(
        "AST position table %s -> %s (%s) for max_length %d",
        table.shape,
        new.shape,
        how,
        config.max_length,
    )
    return {**tensors, key: new.astype(np.float32)}


def rename(key: str) -> tuple[str, ...] | None:
    """An HF tensor name -> our parameter path (`weight`/`bias` leaves resolved by the caller)."""
    key = strip_prefix(key)
    for pattern, repl in _RENAMES:
        key = re.sub(pattern, repl, key)
    key = re.sub(r"\blayer\.(\d+)\.", r"layer_\1.", key)
    return tuple(key.split("."))


def hf_key(path: tuple[str, ...], config: ASTConfig) -> str:
    """Our parameter path (leaf already `weight`/`bias`) -> the HF tensor name; undoes `rename`.

    `rename` maps the transformers 4 names onto ours unchanged but for the layer index, so
    undoing it is that index and the base-model prefix (the head sits outside the base model).
    """
    key = re.sub(r"\blayer_(\d+)\.", r"layer.\1.", ".".join(path))
    return key if path[0] in HEADS else f"audio_spectrogram_transformer.{key}"


def hf_config(config: ASTConfig, **extra) -> dict:
    """Our settings -> the config.json (a dict) of ASTForAudioClassification; inverts
    `make_config` (a dict for the reason given in mh3/weights/bert.py's `hf_config`).

    `max_length` is the one the params were built for, so HF sizes the position table (one row
    per patch of the `max_length` x `num_mel_bins` grid, plus two) exactly as ours, also after a
    `max_length` override resampled or zeroed it. `extra` (`id2label`, `label2id`, `dtype`) goes
    in as is.
    """
    fields = {k: getattr(config, k) for k in _FIELDS}
    return {
        "model_type": MODEL_TYPES[0],
        "architectures": [ARCHITECTURE],
        **fields,
        "qkv_bias": True,
        **extra,
    }


def build(config: ASTConfig, dtype=jnp.float32) -> ASTClassifier:
    return ASTClassifier(config, dtype=dtype)


def example_batch(config: ASTConfig, batch: int = 1) -> dict:
    return {"input_values": jnp.zeros((batch, config.max_length, config.num_mel_bins), jnp.float32)}
