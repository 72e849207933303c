"""A trained BERT-family teacher on disk, and loading it back without retraining.

`<workdir>/params/` holds:
  params.msgpack   the Flax params (flax.serialization bytes);
  model.json       the BertConfig fields, the compute dtype, max_len and class names;
  tokenizer/       the tokenizer with the tokens mh3 added (mh3.data.load_tokenizer reads it).
"""

import dataclasses
import os

import jax
import jax.numpy as jnp
from flax import serialization

from mh3 import files
from mh3.errors import UserError
from mh3.models.bert import BertClassifier, BertConfig

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def save_text_teacher(
    folder: str, model: BertClassifier, params, tokenizer, *, classes, max_len: int
) -> None:
    """Writes params, settings and tokenizer of a text teacher into `folder`."""
    os.makedirs(folder, exist_ok=True)
    host = jax.device_get(params)
    data = serialization.to_bytes(host)
    files.atomic_write(os.path.join(folder, "params.msgpack"), lambda t: open(t, "wb").write(data))
    tokenizer.save(os.path.join(folder, "tokenizer"))
    meta = {
        "kind": "text_teacher",
        "config": dataclasses.asdict(model.config),
        "dtype": jnp.dtype(model.dtype).name,
        "classes": list(classes),
        "max_len": int(max_len),
    }
    files.write_json(os.path.join(folder, "model.json"), meta)


def load_text_teacher(folder: str, *, dtype=None):
    """Loads what `save_text_teacher` wrote.

    Args:
      folder: the `params/` folder of a finished teacher_text workdir.
      dtype: compute dtype override (None: the one it was trained with).

    Returns:
      (model, params, tokenizer, meta) where meta holds `classes` and `max_len`.

    Raises:
      UserError: the folder is not a finished text-teacher export.
    """
    from mh3 import data

    path = os.path.join(folder, "model.json")
    if not os.path.exists(path):
        raise UserError(
            f"{folder}: no model.json; run the teacher_text stage first (it writes params/)"
        )
    meta = files.read_json(path)
    model = BertClassifier(BertConfig(**meta["config"]), dtype=dtype or DTYPES[meta["dtype"]])
    ids = jnp.zeros((1, 8), jnp.int32)
    template = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), {"input_ids": ids}))
    with open(os.path.join(folder, "params.msgpack"), "rb") as f:
        params = serialization.msgpack_restore(f.read())
    want = jax.tree.map(lambda x: x.shape, template["params"])
    if jax.tree.map(lambda x: x.shape, params) != want:
        raise UserError(f"{folder}: params.msgpack does not match model.json; re-run the stage")
    tokenizer = data.load_tokenizer(os.path.join(folder, "tokenizer"))
    return model, params, tokenizer, meta
