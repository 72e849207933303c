"""HF checkpoint folders -> Flax modules and params (`from_hf`), and vocabulary growth.

`from_hf` reads `config.json` and `model.safetensors` (with `safetensors.numpy`, no torch) or
`pytorch_model.bin` (torch), picks the model family from `model_type`, applies overrides the way
HF's `from_pretrained(**kwargs)` does, converts tensor names and layouts, and merges strictly:
every parameter of the module is filled from the checkpoint and shape-checked, except a
classification head that is missing or sized for another number of labels, which is
initialised from `seed`. Anything else that does not fit raises a UserError listing the names.

Leaf rules (PyTorch -> Flax): Linear `weight` -> `kernel` transposed; Conv2d `weight` -> `kernel`
(out, in, h, w) -> (h, w, in, out); LayerNorm `weight` -> `scale`; Embedding `weight` ->
`embedding`; `bias` -> `bias`.
"""

import json
import os
import re

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from flax import traverse_util

from mh3.errors import UserError
from mh3.weights import ast as ast_family
from mh3.weights import bert as bert_family
from mh3.weights.hub import resolve_checkpoint

# model_type -> family module (see mh3/weights/bert.py for what a family module provides).
FAMILIES = {t: family for family in (bert_family, ast_family) for t in family.MODEL_TYPES}


def read_tensors(folder: str) -> dict[str, np.ndarray]:
    """All tensors of a checkpoint folder as float32 numpy arrays (ints kept as they are)."""
    index = os.path.join(folder, "model.safetensors.index.json")
    single = os.path.join(folder, "model.safetensors")
    legacy = os.path.join(folder, "pytorch_model.bin")
    if os.path.exists(index) or os.path.exists(single):
        from safetensors.numpy import load_file

        if os.path.exists(index):
            with open(index) as f:
                shards = sorted(set(json.load(f)["weight_map"].values()))
        else:
            shards = ["model.safetensors"]
        tensors = {}
        for shard in shards:
            tensors.update(load_file(os.path.join(folder, shard)))
    elif os.path.exists(legacy):
        import torch  # only this older format needs torch

        state = torch.load(legacy, map_location="cpu", weights_only=True)
        tensors = {k: (v.float() if v.is_floating_point() else v).numpy() for k, v in state.items()}
    else:
        raise UserError(
            f"{folder}: no model.safetensors or pytorch_model.bin; "
            "pass a checkpoint folder saved with save_pretrained"
        )
    return {
        k: v.astype(np.float32) if np.issubdtype(v.dtype, np.floating) else v
        for k, v in tensors.items()
    }


def read_config(folder: str) -> dict:
    path = os.path.join(folder, "config.json")
    if not os.path.exists(path):
        raise UserError(
            f"{folder}: no config.json; pass a folder written by HF save_pretrained "
            "(config.json + model.safetensors)"
        )
    with open(path) as f:
        hf = json.load(f)
    model_type = hf.get("model_type")
    if model_type not in FAMILIES:
        raise UserError(
            f"{path}: model_type {model_type!r} is not supported; "
            f"supported: {', '.join(sorted(FAMILIES))}"
        )
    return hf


def _to_flax(tensor: np.ndarray, leaf: str) -> np.ndarray:
    if leaf == "kernel" and tensor.ndim == 2:
        return tensor.T
    if leaf == "kernel" and tensor.ndim == 4:
        return tensor.transpose(2, 3, 1, 0)
    return tensor


def _leaf(path: tuple[str, ...], target: dict) -> tuple[str, ...]:
    """Resolves an HF leaf name (`weight`/`bias`) against the module's parameter tree."""
    if path[-1] != "weight":
        return path
    for leaf in ("kernel", "scale", "embedding"):
        if path[:-1] + (leaf,) in target:
            return path[:-1] + (leaf,)
    return path


def from_hf(
    path_or_name: str,
    *,
    num_labels: int | None = None,
    seed: int = 0,
    dtype=jnp.float32,
    **overrides,
):
    """Loads an HF checkpoint as a Flax module and its params.

    Args:
      path_or_name: a checkpoint folder, an alias (`minilm`) or a model-hub name.
      num_labels: size of the classification head; None keeps the checkpoint's head (or builds
        the encoder without one). A head of another size is re-initialised from `seed`.
      seed: seeds every parameter that is initialised rather than loaded.
      dtype: compute dtype (params stay float32).
      **overrides: architecture changes as HF applies them to a pretrained model, e.g.
        `num_hidden_layers=4` (keeps the first 4 layers), `num_attention_heads=8` (re-splits the
        same Q/K/V weights), `hidden_act='relu'`, `hidden_dropout_prob=0.05`; for AST also
        `max_length=512` with `position_table='resample'|'zeros'` (see mh3/weights/ast.py).

    Returns:
      (module, params) with `module.apply({'params': params}, batch, train=False)`.

    Raises:
      UserError: missing or unreadable folder, unsupported model_type, an unknown override, or
        tensors that do not fit the model (names and shapes listed).
    """
    folder = resolve_checkpoint(path_or_name)
    hf = read_config(folder)
    family = FAMILIES[hf["model_type"]]
    unknown = sorted(set(overrides) - set(family.OVERRIDES))
    if unknown:
        raise UserError(
            f"{path_or_name}: unknown override(s) {unknown}; allowed: {sorted(family.OVERRIDES)}"
        )
    raw = read_tensors(folder)
    original = {family.strip_prefix(k): k for k in raw}  # for error messages
    tensors = {family.strip_prefix(k): v for k, v in raw.items()}
    config = family.make_config(hf, tensors, num_labels, overrides)
    if hasattr(family, "adapt_tensors"):  # e.g. AST's position table for another max_length
        tensors = family.adapt_tensors(tensors, hf, config, overrides)
    model = family.build(config, dtype)
    batch = family.example_batch(config)
    shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(seed), batch))["params"]
    target = traverse_util.flatten_dict(shapes)

    loaded, unexpected, reinit = {}, [], set()
    for key, tensor in tensors.items():
        path = family.rename(key)
        if path is None:
            continue
        path = _leaf(path, target)
        layer = re.fullmatch(r"layer_(\d+)", path[1]) if len(path) > 1 else None
        if path[0] == "encoder" and layer and int(layer.group(1)) >= config.num_hidden_layers:
            continue  # num_hidden_layers override: keep the first N layers
        is_head = path[0] in family.HEADS
        if path not in target:
            if is_head and num_labels is not None:
                reinit.add(path)
                continue
            unexpected.append(original[key])
            continue
        value = _to_flax(tensor, path[-1])
        if value.shape != target[path].shape:
            if is_head and num_labels is not None:
                reinit.add(path)
                continue
            raise UserError(
                f"{folder}: tensor {original[key]} has shape {tensor.shape}, the model expects "
                f"{'/'.join(path)} of shape {target[path].shape} (after layout conversion); "
                "check config.json against the weights"
            )
        loaded[path] = value
    missing = [p for p in target if p not in loaded]
    not_head = ["/".join(p) for p in missing if p[0] not in family.HEADS]
    if unexpected or not_head:
        raise UserError(
            f"{folder}: checkpoint and model do not match; missing from the checkpoint: "
            f"{not_head or 'none'}; unexpected in the checkpoint: {unexpected or 'none'}"
        )
    if missing:
        logging.info(
            "%s: initialising %s from seed %d",
            path_or_name,
            sorted({p[0] for p in missing}),
            seed,
        )
        fresh = traverse_util.flatten_dict(
            jax.jit(model.init)(jax.random.PRNGKey(seed), batch)["params"]
        )
        loaded.update({p: fresh[p] for p in missing})
    params = traverse_util.unflatten_dict({p: jnp.asarray(v) for p, v in loaded.items()})
    return model, params


def grow_vocab(model, params, new_vocab_size: int, *, seed: int):
    """Adds word-embedding rows for tokens added to a tokenizer.

    New rows are N(0, initializer_range) (0.02 for BERT), drawn from `seed`, so the same seed
    always gives the same rows. Existing rows are unchanged.

    Returns:
      (model with the new vocab_size, params with the grown table).
    """
    table = params["embeddings"]["word_embeddings"]["embedding"]
    old = table.shape[0]
    if new_vocab_size < old:
        raise ValueError(f"cannot shrink the vocabulary from {old} to {new_vocab_size} rows")
    if new_vocab_size == old:
        return model, params
    std = model.config.initializer_range
    rows = std * jax.random.normal(jax.random.PRNGKey(seed), (new_vocab_size - old, table.shape[1]))
    grown = jnp.concatenate([table, rows.astype(table.dtype)], axis=0)
    params = jax.tree_util.tree_map(lambda x: x, params)  # copy the containers, not the arrays
    params["embeddings"]["word_embeddings"]["embedding"] = grown
    model = model.clone(config=model.config.replace(vocab_size=new_vocab_size))
    return model, params


__all__ = ["from_hf", "grow_vocab", "read_config", "read_tensors", "resolve_checkpoint"]
