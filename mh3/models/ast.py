"""The Audio Spectrogram Transformer (AST; Gong et al., 2021) in Flax.

Input: log-mel features `input_values` (B, T, mel) with T = `max_length` frames, as HF's
`ASTFeatureExtractor` makes them. The spectrogram is cut into 16x16 patches with a strided
convolution (frequency stride 10, time stride 10 for the AudioSet checkpoints), a CLS token and
a distillation token are prepended, a learned position table is added, and a pre-LN ViT encoder
runs over the sequence. The head averages the CLS and distillation outputs, then LayerNorm and a
linear layer, exactly as HF's `ASTForAudioClassification`.

The position table has one row per patch plus two; its size depends on `max_length`, which is
why mh3/weights/ast.py adapts a pretrained table when a different `max_length` is asked for.
"""

import dataclasses
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from mh3.models import transformer


@dataclasses.dataclass(frozen=True)
class ASTConfig:
    """Architecture settings, with HF ASTConfig names. `num_labels=0`: no head."""

    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.0
    attention_probs_dropout_prob: float = 0.0
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12
    patch_size: int = 16
    frequency_stride: int = 10
    time_stride: int = 10
    max_length: int = 1024
    num_mel_bins: int = 128
    num_labels: int = 0

    def __post_init__(self):
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size {self.hidden_size} is not divisible by "
                f"num_attention_heads {self.num_attention_heads}"
            )
        if self.max_length < self.patch_size or self.num_mel_bins < self.patch_size:
            raise ValueError(
                f"max_length {self.max_length} and num_mel_bins {self.num_mel_bins} must be at "
                f"least the patch size {self.patch_size}"
            )
        transformer.activation(self.hidden_act)

    @property
    def grid(self) -> tuple[int, int]:
        """(frequency patches, time patches)."""
        f = (self.num_mel_bins - self.patch_size) // self.frequency_stride + 1
        t = (self.max_length - self.patch_size) // self.time_stride + 1
        return f, t

    @property
    def num_positions(self) -> int:
        f, t = self.grid
        return f * t + 2

    def replace(self, **changes) -> "ASTConfig":
        return dataclasses.replace(self, **changes)


class PatchEmbeddings(nn.Module):
    """(B, T, mel) -> (B, F*T' patches, D); patches ordered frequency-major like HF."""

    config: ASTConfig
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        cfg = self.config
        # NHWC with H = frequency, W = time: HF's (B, 1, mel, T) in channels-last order.
        x = jnp.swapaxes(x, 1, 2)[..., None].astype(self.dtype)
        x = nn.Conv(
            cfg.hidden_size,
            (cfg.patch_size, cfg.patch_size),
            strides=(cfg.frequency_stride, cfg.time_stride),
            padding="VALID",
            dtype=self.dtype,
            param_dtype=jnp.float32,
            kernel_init=nn.initializers.normal(cfg.initializer_range),
            name="projection",
        )(x)
        return x.reshape(x.shape[0], -1, cfg.hidden_size)


class Embeddings(nn.Module):
    """[CLS, distillation, patches] + position table -> dropout."""

    config: ASTConfig
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool):
        cfg = self.config
        d = cfg.hidden_size
        # Zeros, as HF initialises these three (and as the paper's resized table starts).
        cls = self.param("cls_token", nn.initializers.zeros, (1, 1, d), jnp.float32)
        dist = self.param("distillation_token", nn.initializers.zeros, (1, 1, d), jnp.float32)
        pos = self.param(
            "position_embeddings", nn.initializers.zeros, (1, cfg.num_positions, d), jnp.float32
        )
        patches = PatchEmbeddings(cfg, self.dtype, name="patch_embeddings")(x)
        b = patches.shape[0]
        tokens = [jnp.broadcast_to(t, (b, 1, d)).astype(self.dtype) for t in (cls, dist)]
        x = jnp.concatenate([*tokens, patches], axis=1) + pos.astype(self.dtype)
        return transformer.Dropout(cfg.hidden_dropout_prob)(x, deterministic=not train)


class ASTHead(nn.Module):
    """LayerNorm -> linear on the pooled vector (HF `classifier`)."""

    config: ASTConfig
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, pooled):
        cfg = self.config
        x = transformer.layer_norm("layernorm", cfg.layer_norm_eps, self.dtype)(pooled)
        return transformer.dense(cfg.num_labels, "dense", self.dtype, cfg.initializer_range)(x)


class ASTClassifier(nn.Module):
    """AST encoder with HF's audio-classification head.

    `apply({'params': p}, {'input_values': (B, max_length, mel)}, train=False)` -> `(logits, out)`
    with `out['hidden']` (B, positions, D) after the final LayerNorm and `out['pooled']` (B, D),
    the mean of the CLS and distillation outputs. Logits are float32, or None without a head.
    """

    config: ASTConfig
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, batch: dict, train: bool = False):
        cfg = self.config
        x = batch["input_values"]
        if x.shape[1:] != (cfg.max_length, cfg.num_mel_bins):
            raise ValueError(
                f"input_values of shape {x.shape[1:]} per example; this model takes "
                f"({cfg.max_length}, {cfg.num_mel_bins}) (max_length frames x mel bins)"
            )
        x = Embeddings(cfg, self.dtype, name="embeddings")(x, train)
        layer = transformer.layer_kwargs(cfg, self.dtype)
        x = transformer.Encoder(
            transformer.PreLNLayer, layer, cfg.num_hidden_layers, name="encoder"
        )(x, None, train)
        hidden = transformer.layer_norm("layernorm", cfg.layer_norm_eps, self.dtype)(x)
        pooled = (hidden[:, 0] + hidden[:, 1]) / 2
        logits = None
        if cfg.num_labels:
            logits = ASTHead(cfg, self.dtype, name="classifier")(pooled).astype(jnp.float32)
        return logits, {"hidden": hidden, "pooled": pooled}
