"""The BERT family in Flax: BERT, RoBERTa and DistilBERT as one module with settings.

The three differ only in:
- positions: BERT and DistilBERT count 0..L-1; RoBERTa counts real tokens from
  `pad_token_id + 1` and gives padding the position `pad_token_id`;
- token types: DistilBERT has none (`type_vocab_size=0`);
- the sequence-classification head, exactly as HF builds it:
  BERT: [CLS] -> pooler (dense, tanh) -> dropout -> classifier;
  RoBERTa: [CLS] -> dropout -> classifier/dense -> tanh -> dropout -> classifier/out_proj;
  DistilBERT: [CLS] -> pre_classifier -> ReLU -> dropout -> classifier.
Checkpoint names are mapped onto this one module in mh3/weights/bert.py.

`out['pooled']` is the vector the final linear layer reads (BERT: pooler output; RoBERTa: the
head's tanh features; DistilBERT: the ReLU features); without a head it is the pooler output
when the checkpoint has a pooler, else the [CLS] hidden state.
"""

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from mh3.models import transformer

FAMILIES = ("bert", "roberta", "distilbert")


@dataclasses.dataclass(frozen=True)
class BertConfig:
    """Architecture settings, with HF BertConfig names (DistilBERT's are mapped on load).

    `classifier_dropout=None` means `hidden_dropout_prob`, as in HF. `num_labels=0` builds the
    encoder without a classification head. `pooler` says whether a pooler (dense+tanh on
    [CLS]) exists; BERT's head always has one.
    """

    family: str = "bert"
    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    classifier_dropout: float | None = None
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0
    initializer_range: float = 0.02
    # std of the word embeddings' N(0, std) init; None = initializer_range (HF). MM-EMOG's
    # paper encoder used a fresh torch nn.Embedding, i.e. 1.0.
    word_embedding_std: float | None = None
    num_labels: int = 0
    pooler: bool = True

    def __post_init__(self):
        if self.family not in FAMILIES:
            raise ValueError(f"family={self.family!r}; choose one of {FAMILIES}")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size {self.hidden_size} is not divisible by "
                f"num_attention_heads {self.num_attention_heads}"
            )
        transformer.activation(self.hidden_act)  # fail early on an unknown name

    @property
    def head_dropout(self) -> float:
        if self.classifier_dropout is None:
            return self.hidden_dropout_prob
        return self.classifier_dropout

    def replace(self, **changes) -> "BertConfig":
        return dataclasses.replace(self, **changes)


class Embeddings(nn.Module):
    """word + position [+ token type] embeddings -> LayerNorm -> dropout."""

    config: BertConfig
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, input_ids, token_type_ids, train: bool):
        cfg = self.config
        init = nn.initializers.normal(cfg.initializer_range)

        def embed(n, name, init=init):
            return nn.Embed(n, cfg.hidden_size, dtype=self.dtype, embedding_init=init, name=name)

        word_std = (
            cfg.initializer_range if cfg.word_embedding_std is None else cfg.word_embedding_std
        )

        if cfg.family == "roberta":
            real = (input_ids != cfg.pad_token_id).astype(jnp.int32)
            positions = jnp.cumsum(real, axis=1) * real + cfg.pad_token_id
        else:
            positions = jnp.broadcast_to(jnp.arange(input_ids.shape[1]), input_ids.shape)
        x = embed(cfg.vocab_size, "word_embeddings", nn.initializers.normal(word_std))(input_ids)
        x = x + embed(cfg.max_position_embeddings, "position_embeddings")(positions)
        if cfg.type_vocab_size:
            x = x + embed(cfg.type_vocab_size, "token_type_embeddings")(token_type_ids)
        x = transformer.layer_norm("LayerNorm", cfg.layer_norm_eps, self.dtype)(x)
        return transformer.Dropout(cfg.hidden_dropout_prob)(x, deterministic=not train)


class Pooler(nn.Module):
    """dense -> tanh on the first token (HF `pooler`)."""

    features: int
    init_std: float
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        return jnp.tanh(transformer.dense(self.features, "dense", self.dtype, self.init_std)(x))


class RobertaHead(nn.Module):
    """dropout -> dense -> tanh -> dropout -> out_proj (HF `classifier` of RoBERTa)."""

    num_labels: int
    dropout_rate: float
    init_std: float
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, cls, train: bool):
        x = transformer.Dropout(self.dropout_rate)(cls, deterministic=not train)
        features = jnp.tanh(transformer.dense(cls.shape[-1], "dense", self.dtype, self.init_std)(x))
        x = transformer.Dropout(self.dropout_rate)(features, deterministic=not train)
        logits = transformer.dense(self.num_labels, "out_proj", self.dtype, self.init_std)(x)
        return logits, features


class BertClassifier(nn.Module):
    """A BERT-family encoder with its HF sequence-classification head.

    `apply({'params': p}, batch, train=False)` -> `(logits, out)`; batch holds `input_ids` and
    optionally `attention_mask` (1 real token, 0 padding) and `token_type_ids`; logits are
    float32 (B, num_labels), or None when `num_labels == 0`; `out['hidden']` is the last layer
    (B, L, D) and `out['pooled']` (B, D) is described in the module docstring.
    """

    config: BertConfig
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, batch: dict, train: bool = False):
        cfg = self.config
        ids = batch["input_ids"]
        mask = batch.get("attention_mask")
        if mask is None:
            mask = jnp.ones_like(ids)
        types = batch.get("token_type_ids")
        if types is None:
            types = jnp.zeros_like(ids)
        x = Embeddings(cfg, self.dtype, name="embeddings")(ids, types, train)
        layer = transformer.layer_kwargs(cfg, self.dtype)
        hidden = transformer.Encoder(
            transformer.PostLNLayer, layer, cfg.num_hidden_layers, name="encoder"
        )(x, transformer.attention_bias(mask), train)
        cls = hidden[:, 0]
        std, d = cfg.initializer_range, cfg.hidden_size
        pooled = Pooler(d, std, self.dtype, name="pooler")(cls) if cfg.pooler else cls
        logits = None
        if cfg.num_labels:
            drop = transformer.Dropout(cfg.head_dropout)
            if cfg.family == "bert":
                x = drop(pooled, deterministic=not train)
                logits = transformer.dense(cfg.num_labels, "classifier", self.dtype, std)(x)
            elif cfg.family == "roberta":
                logits, pooled = RobertaHead(
                    cfg.num_labels, cfg.head_dropout, std, self.dtype, name="classifier"
                )(cls, train)
            else:
                pooled = jax.nn.relu(transformer.dense(d, "pre_classifier", self.dtype, std)(cls))
                x = drop(pooled, deterministic=not train)
                logits = transformer.dense(cfg.num_labels, "classifier", self.dtype, std)(x)
            logits = logits.astype(jnp.float32)
        return logits, {"hidden": hidden, "pooled": pooled}
