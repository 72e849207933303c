"""HF BERT / RoBERTa / DistilBERT checkpoints -> mh3.models.bert settings and parameter names.

A family module for `mh3.weights.from_hf` provides: `MODEL_TYPES`, `OVERRIDES`, `HEADS`,
`make_config`, `strip_prefix`, `rename`, `build`, `example_batch` and, when a checkpoint tensor
may need reshaping for the requested settings, `adapt_tensors` (see mh3/weights/ast.py).
"""

import re

import jax.numpy as jnp

from mh3.errors import UserError
from mh3.models.bert import BertClassifier, BertConfig

MODEL_TYPES = ("bert", "roberta", "distilbert")

# Top-level modules of the head; these may be (re-)initialised when the checkpoint lacks them
# or holds one for a different number of labels.
HEADS = ("classifier", "pre_classifier", "pooler")

# Override names users pass (HF BertConfig names) -> BertConfig fields. DistilBERT's own config
# names are accepted too, as HF's DistilBertConfig does.
OVERRIDES = {
    "num_hidden_layers": "num_hidden_layers",
    "num_attention_heads": "num_attention_heads",
    "hidden_act": "hidden_act",
    "hidden_dropout_prob": "hidden_dropout_prob",
    "attention_probs_dropout_prob": "attention_probs_dropout_prob",
    "classifier_dropout": "classifier_dropout",
    "n_layers": "num_hidden_layers",
    "n_heads": "num_attention_heads",
    "activation": "hidden_act",
    "dropout": "hidden_dropout_prob",
    "attention_dropout": "attention_probs_dropout_prob",
    "seq_classif_dropout": "classifier_dropout",
}

# DistilBERT config.json keys -> BertConfig fields.
_DISTIL_KEYS = {
    "dim": "hidden_size",
    "n_layers": "num_hidden_layers",
    "n_heads": "num_attention_heads",
    "hidden_dim": "intermediate_size",
    "activation": "hidden_act",
    "dropout": "hidden_dropout_prob",
    "attention_dropout": "attention_probs_dropout_prob",
    "seq_classif_dropout": "classifier_dropout",
}
_BERT_KEYS = (
    "vocab_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "hidden_act",
    "hidden_dropout_prob",
    "attention_probs_dropout_prob",
    "classifier_dropout",
    "max_position_embeddings",
    "type_vocab_size",
    "layer_norm_eps",
    "pad_token_id",
    "initializer_range",
)
_SHARED_DISTIL_KEYS = ("vocab_size", "max_position_embeddings", "pad_token_id", "initializer_range")

# DistilBERT module names -> the BERT names our module uses.
_DISTIL_RENAMES = [
    (r"^transformer\.layer\.", "encoder.layer."),
    (r"\.attention\.q_lin\.", ".attention.self.query."),
    (r"\.attention\.k_lin\.", ".attention.self.key."),
    (r"\.attention\.v_lin\.", ".attention.self.value."),
    (r"\.attention\.out_lin\.", ".attention.output.dense."),
    (r"\.sa_layer_norm\.", ".attention.output.LayerNorm."),
    (r"\.ffn\.lin1\.", ".intermediate.dense."),
    (r"\.ffn\.lin2\.", ".output.dense."),
    (r"\.output_layer_norm\.", ".output.LayerNorm."),
]

# Tensors that are not parameters of a classifier: buffers and pre-training heads (MLM, NSP).
_DROPPED = re.compile(
    r"(^|\.)(position_ids|token_type_ids)$"
    r"|^(cls|lm_head|vocab_transform|vocab_layer_norm|vocab_projector)\."
)


def _head_size(model_type: str, tensors: dict) -> int | None:
    """The number of labels of a classification head in the checkpoint, if it has one."""
    key = "classifier.out_proj.weight" if model_type == "roberta" else "classifier.weight"
    return tensors[key].shape[0] if key in tensors else None


def make_config(hf: dict, tensors: dict, num_labels: int | None, overrides: dict) -> BertConfig:
    """Builds the module settings from config.json, the (renamed-prefix) tensors and overrides.

    Args:
      hf: the checkpoint's config.json.
      tensors: checkpoint tensors with the family prefix (`bert.`, ...) removed.
      num_labels: requested head size; None keeps the checkpoint's head (none if it has none).
      overrides: OVERRIDES names -> values, applied as HF's `from_pretrained(**kwargs)` does.
    """
    model_type = hf["model_type"]
    if model_type == "distilbert":
        fields = {dst: hf[src] for src, dst in _DISTIL_KEYS.items() if src in hf}
        fields.update({k: hf[k] for k in _SHARED_DISTIL_KEYS if k in hf})
        fields["type_vocab_size"] = 0
    else:
        fields = {k: hf[k] for k in _BERT_KEYS if k in hf}
    for key, value in overrides.items():
        fields[OVERRIDES[key]] = value
    head = _head_size(model_type, tensors)
    labels = (head or 0) if num_labels is None else num_labels
    has_pooler = "pooler.dense.weight" in tensors
    # BERT's classification head includes the pooler, so a BERT classifier always has one;
    # RoBERTa's classifier replaces its pooler.
    pooler = {
        "bert": has_pooler or labels > 0,
        "roberta": has_pooler and labels == 0,
        "distilbert": False,
    }[model_type]
    try:
        return BertConfig(family=model_type, num_labels=labels, pooler=pooler, **fields)
    except ValueError as e:
        raise UserError(f"bad model settings: {e}") from None


def rename(key: str) -> tuple[str, ...] | None:
    """An HF tensor name -> our parameter path (leaf `weight`/`bias` resolved by the caller).

    Returns None for tensors a classifier does not use (buffers, pre-training heads).
    """
    key = strip_prefix(key)
    if _DROPPED.search(key):
        return None
    if key.startswith("transformer."):
        for pattern, repl in _DISTIL_RENAMES:
            key = re.sub(pattern, repl, key)
    key = re.sub(r"\blayer\.(\d+)\.", r"layer_\1.", key)
    return tuple(key.split("."))


def strip_prefix(key: str) -> str:
    """Removes the base-model prefix that HF task models put on encoder tensors."""
    return re.sub(r"^(bert|roberta|distilbert)\.", "", key)


def build(config: BertConfig, dtype=jnp.float32) -> BertClassifier:
    return BertClassifier(config, dtype=dtype)


def example_batch(config: BertConfig, batch: int = 1, length: int = 8) -> dict:
    """A dummy batch for `init` / `eval_shape`."""
    ids = jnp.zeros((batch, length), jnp.int32)
    return {"input_ids": ids, "attention_mask": jnp.ones_like(ids), "token_type_ids": ids}
