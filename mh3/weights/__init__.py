"""HF checkpoint folders <-> Flax modules and params (`from_hf`, `save_hf`), vocabulary growth.

`from_hf` reads `config.json` and `model.safetensors` (with `safetensors.numpy`, no torch) or
`pytorch_model.bin` (torch), picks the model family from `model_type`, applies overrides the way
HF's `from_pretrained(**kwargs)` does, converts tensor names and layouts, and merges strictly:
every parameter of the module is filled from the checkpoint and shape-checked, except a
classification head that is missing or sized for another number of labels, which is
initialised from `seed`. Anything else that does not fit raises a UserError listing the names.

Leaf rules (PyTorch -> Flax): Linear `weight` -> `kernel` transposed; Conv2d `weight` -> `kernel`
(out, in, h, w) -> (h, w, in, out); LayerNorm `weight` -> `scale`; Embedding `weight` ->
`embedding`; `bias` -> `bias`.

`save_hf` is the way back: a folder that HF's `from_pretrained` loads as the matching
*ForSequenceClassification / ASTForAudioClassification with nothing missing or unexpected, and
that `from_hf` reads back to the same params bit for bit. Names come from the family's `hf_key`,
checked against its `rename` for every tensor, and layouts from the inverse of the leaf rules.
"""

import importlib.metadata
import json
import os
import re
from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from flax import traverse_util

from mh3 import files
from mh3.errors import UserError
from mh3.weights import ast as ast_family
from mh3.weights import bert as bert_family
from mh3.weights.hub import resolve_checkpoint

# model_type -> family module (see mh3/weights/bert.py for what a family module provides).
FAMILIES = {t: family for family in (bert_family, ast_family) for t in family.MODEL_TYPES}
# `model.compute_dtype` names -> the dtype a module computes in (params stay float32).
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


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


# Conv2d weight (out, in, h, w) -> Flax kernel (h, w, in, out); save_hf uses the inverse.
_CONV_TO_FLAX = (2, 3, 1, 0)
# Flax leaf names that HF calls `weight` (Linear/Conv, LayerNorm, Embedding).
_WEIGHT_LEAVES = ("kernel", "scale", "embedding")


def _to_flax(tensor: np.ndarray, leaf: str) -> np.ndarray:
    if leaf == "kernel" and tensor.ndim == 2:
        return tensor.T
    if leaf == "kernel" and tensor.ndim == 4:
        return tensor.transpose(_CONV_TO_FLAX)
    return tensor


def _to_hf(value: np.ndarray, leaf: str) -> np.ndarray:
    """Undoes `_to_flax`, contiguous as safetensors needs."""
    if leaf == "kernel" and value.ndim == 2:
        value = value.T
    elif leaf == "kernel" and value.ndim == 4:
        value = value.transpose(np.argsort(_CONV_TO_FLAX))
    return np.ascontiguousarray(value)


def _leaf(path: tuple[str, ...], target: dict) -> tuple[str, ...]:
    """Resolves an HF leaf name (`weight`/`bias`) against the module's parameter tree."""
    if path[-1] != "weight":
        return path
    for leaf in _WEIGHT_LEAVES:
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
        # Only heads are ever missing. Flax seeds each parameter from its module path, so a
        # copy without encoder layers gives the heads the values the whole model's init would,
        # and compiles in a fraction of the time (MiniLM: the whole init compiled in 3.4 s).
        shallow = family.build(config.replace(num_hidden_layers=0), dtype)
        fresh = traverse_util.flatten_dict(
            jax.jit(shallow.init)(jax.random.PRNGKey(seed), batch)["params"]
        )
        loaded.update({p: fresh[p] for p in missing})
    params = traverse_util.unflatten_dict({p: jnp.asarray(v) for p, v in loaded.items()})
    return model, params


def save_hf(folder: str, model, params, *, id2label: Mapping[int, str] | Sequence[str]) -> None:
    """Writes a classifier as an HF `save_pretrained` folder: config.json + model.safetensors.

    `transformers.AutoModelForSequenceClassification.from_pretrained(folder)` (BERT, RoBERTa,
    DistilBERT) or `ASTForAudioClassification.from_pretrained(folder)` then gives the logits of
    `model.apply({'params': params}, batch, train=False)`, and `from_hf(folder)` gives back the
    same settings and params. Tensors are float32 whatever the compute dtype (params are float32;
    bf16 is only the compute dtype). Each file is written atomically, the weights first, so a
    config.json never sits next to weights from another save.

    Args:
      folder: where to write (created if needed); other files in it are left alone.
      model: a module from `from_hf` (after `grow_vocab`, if the vocabulary grew).
      params: its params, `{'params': ...}` unwrapped.
      id2label: the class names, as a list in label order or a dict label index -> name; one
        per output of the head.

    Raises:
      ValueError: a model without a head, class names that do not match the head, params that
        do not fit the model, settings HF cannot express, or a folder holding other weights
        (sharded or .bin) that loaders would read instead of ours.
    """
    family = next((f for f in FAMILIES.values() if isinstance(model, f.MODULE)), None)
    if family is None:
        raise ValueError(f"save_hf: no HF family for {type(model).__name__}")
    config = model.config
    names = dict(enumerate(id2label)) if not isinstance(id2label, Mapping) else dict(id2label)
    if config.num_labels == 0:
        raise ValueError("save_hf writes classifiers; this model has no classification head")
    if sorted(names) != list(range(config.num_labels)) or len(set(names.values())) != len(names):
        raise ValueError(
            f"id2label {names} must name each of the head's {config.num_labels} outputs "
            "(labels 0..n-1) with a distinct name"
        )
    for other in ("model.safetensors.index.json", "pytorch_model.bin"):
        if os.path.exists(os.path.join(folder, other)):
            raise ValueError(
                f"{folder} holds {other}, which loaders would read instead of the weights "
                "written here; pass a new folder"
            )

    shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), family.example_batch(config)))
    target = {p: s.shape for p, s in traverse_util.flatten_dict(shapes["params"]).items()}
    flat = traverse_util.flatten_dict(params)
    got = {p: np.shape(v) for p, v in flat.items()}
    wrong = [
        f"{'/'.join(p)}: {got.get(p)} (model: {target.get(p)})"
        for p in sorted(set(got) | set(target))
        if got.get(p) != target.get(p)
    ]
    if wrong:
        raise ValueError(f"params do not fit the model ({config}): {wrong}")

    tensors = {}
    for path, value in flat.items():
        hf_path = path[:-1] + ("weight",) if path[-1] in _WEIGHT_LEAVES else path
        key = family.hf_key(hf_path, config)
        # The written name must read back to this very parameter: checks hf_key against rename.
        back = family.rename(key)
        if back is None or _leaf(back, target) != path:
            raise RuntimeError(f"{family.__name__}: {'/'.join(path)} -> {key} -> {back}")
        tensors[key] = _to_hf(np.asarray(value, np.float32), path[-1])

    labels = {"id2label": names, "label2id": {name: i for i, name in names.items()}}
    hf = family.hf_config(config, **labels, dtype="float32")
    hf["transformers_version"] = importlib.metadata.version("transformers")  # as HF writes it

    from safetensors.numpy import save_file

    # "pt": the tensors are in PyTorch's layout; HF loaders check this metadata.
    write_weights = lambda tmp: save_file(tensors, tmp, metadata={"format": "pt"})
    files.atomic_write(os.path.join(folder, "model.safetensors"), write_weights)
    files.write_json(os.path.join(folder, "config.json"), hf)
    logging.info("wrote %s (%d tensors, %s)", folder, len(tensors), hf["architectures"][0])


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


__all__ = ["from_hf", "grow_vocab", "read_config", "read_tensors", "resolve_checkpoint", "save_hf"]
