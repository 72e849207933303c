"""HF BERT / RoBERTa / DistilBERT checkpoints <-> mh3.models.bert settings and parameter names.

A family module for `mh3.weights.from_hf` provides: `MODEL_TYPES`, `OVERRIDES`, `HEADS`,
`make_config`, `strip_prefix`, `rename`, `build`, `example_batch` and, when a checkpoint tensor
may need reshaping for the requested settings, `adapt_tensors` (see mh3/weights/ast.py).
For `mh3.weights.save_hf` it also provides the way back: `MODULE`, `hf_config` (our settings ->
HF's config.json) and `hf_key` (our parameter path -> HF tensor name, the inverse of `rename`).
"""

import re

import jax.numpy as jnp

from mh3.errors import UserError
from mh3.models.bert import BertClassifier, BertConfig

MODEL_TYPES = ("bert", "roberta", "distilbert")
MODULE = BertClassifier

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

# DistilBERT module names -> the BERT names our module uses. Literal name pieces, one-to-one, so
# the same table renames both ways (`_swap`): reading and writing cannot drift apart.
_DISTIL_NAMES = {
    "transformer.layer.": "encoder.layer.",
    ".attention.q_lin.": ".attention.self.query.",
    ".attention.k_lin.": ".attention.self.key.",
    ".attention.v_lin.": ".attention.self.value.",
    ".attention.out_lin.": ".attention.output.dense.",
    ".sa_layer_norm.": ".attention.output.LayerNorm.",
    ".ffn.lin1.": ".intermediate.dense.",
    ".ffn.lin2.": ".output.dense.",
    ".output_layer_norm.": ".output.LayerNorm.",
}
# Modules of HF's *ForSequenceClassification that sit outside the base model, so their tensor
# names carry no `bert.`/`roberta.`/`distilbert.` prefix (BERT's pooler is inside the base).
_TASK_MODULES = ("classifier", "pre_classifier")
ARCHITECTURES = {
    "bert": "BertForSequenceClassification",
    "roberta": "RobertaForSequenceClassification",
    "distilbert": "DistilBertForSequenceClassification",
}
# HF's DistilBERT hard-codes its LayerNorm epsilon; config.json has no key for it.
_DISTIL_LAYER_NORM_EPS = 1e-12

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
        key = _swap(key, _DISTIL_NAMES)
    key = re.sub(r"\blayer\.(\d+)\.", r"layer_\1.", key)
    return tuple(key.split("."))


def hf_key(path: tuple[str, ...], config: BertConfig) -> str:
    """Our parameter path (leaf already `weight`/`bias`) -> the HF tensor name; undoes `rename`."""
    key = re.sub(r"\blayer_(\d+)\.", r"layer.\1.", ".".join(path))
    if config.family == "distilbert":
        key = _swap(key, {ours: theirs for theirs, ours in _DISTIL_NAMES.items()})
    return key if path[0] in _TASK_MODULES else f"{config.family}.{key}"


def _swap(key: str, names: dict[str, str]) -> str:
    """Replaces each name piece of `names` found in `key` in one left-to-right pass.

    One pass, longest piece first where two start at the same place, so a piece that is part of
    another (`.output.dense.` in `.attention.output.dense.`) is never renamed twice.
    """
    pieces = sorted(names, key=len, reverse=True)
    return re.sub("|".join(map(re.escape, pieces)), lambda m: names[m.group()], key)


def hf_config(config: BertConfig, **extra) -> dict:
    """Our settings -> the config.json (a dict) of the matching HF *ForSequenceClassification.

    Inverts `make_config`: every setting that changes the forward pass is written (DistilBERT's
    under its own key names), with `model_type` and `architectures`; HF fills the keys left out
    with its class defaults when it loads the folder. `extra` (`id2label`, `label2id`, `dtype`)
    goes in as is. A plain dict, not transformers' config class: importing those imports torch
    (about 3 s), which nothing else in an export needs.

    Raises:
      ValueError: settings HF's model of this family cannot express (a BERT head without a
        pooler, a RoBERTa or DistilBERT pooler, DistilBERT token types or LayerNorm epsilon).
    """
    family = config.family
    if config.pooler != (family == "bert"):
        raise ValueError(
            f"{family} classifier with pooler={config.pooler}: HF's "
            f"{ARCHITECTURES[family]} has {'a' if family == 'bert' else 'no'} pooler"
        )
    if family == "distilbert":
        if config.type_vocab_size or config.layer_norm_eps != _DISTIL_LAYER_NORM_EPS:
            raise ValueError(
                f"DistilBERT with type_vocab_size={config.type_vocab_size}, "
                f"layer_norm_eps={config.layer_norm_eps}: HF's DistilBERT has no token types "
                f"and a fixed epsilon {_DISTIL_LAYER_NORM_EPS}"
            )
        fields = {theirs: getattr(config, ours) for theirs, ours in _DISTIL_KEYS.items()}
        fields.update({k: getattr(config, k) for k in _SHARED_DISTIL_KEYS})
        # HF's DistilBERT takes the head dropout as a number; ours may say "same as hidden".
        fields["seq_classif_dropout"] = config.head_dropout
    else:
        fields = {k: getattr(config, k) for k in _BERT_KEYS}
    return {"model_type": family, "architectures": [ARCHITECTURES[family]], **fields, **extra}


def strip_prefix(key: str) -> str:
    """Removes the base-model prefix that HF task models put on encoder tensors."""
    return re.sub(r"^(bert|roberta|distilbert)\.", "", key)


def build(config: BertConfig, dtype=jnp.float32) -> BertClassifier:
    return BertClassifier(config, dtype=dtype)


def example_batch(config: BertConfig, batch: int = 1, length: int = 8) -> dict:
    """A dummy batch for `init` / `eval_shape`."""
    ids = jnp.zeros((batch, length), jnp.int32)
    return {"input_ids": ids, "attention_mask": jnp.ones_like(ids), "token_type_ids": ids}
