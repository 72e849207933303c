"""Transformer encoder blocks shared by every model family in mh3.

Two layer layouts cover the models we port:
- `PostLNLayer`: BERT/RoBERTa/DistilBERT (residual add, then LayerNorm);
- `PreLNLayer`: ViT/DeiT/AST (LayerNorm before attention and before the MLP).
Both use the same `SelfAttention`. Submodules carry the names of the Hugging Face PyTorch
modules (`attention/self/query`, `intermediate/dense`, ...) so that checkpoint conversion is a
name map plus a few leaf rules (see mh3/weights).

Dropout is `Dropout` below (a hashed keep mask), not flax's, for speed on CPU.

`SelfAttention` computes its core in one of three forms (`attention_form`): batched (the
textbook one, and the only one with attention dropout), example by example on the CPU, and
cuDNN's fused kernel on a GPU where it applies.

Parameters are always float32; `dtype` is the compute dtype (bf16 halves activation memory and
uses bf16 matmuls where the CPU/GPU/TPU has them). Softmax and LayerNorm statistics run in
float32 whatever the compute dtype, because bf16 loses too much there.
"""

import contextlib
import contextvars
import functools
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

Dtype = Any

# Whether SelfAttention may leave its batched form (`attention_form`): False only within
# `batched_attention()`.
_OTHER_FORMS = contextvars.ContextVar("mh3_attention_other_forms", default=True)

# HF `hidden_act` names -> functions. HF "gelu" is the exact erf form; "gelu_new" and
# "gelu_pytorch_tanh" are the tanh approximation.
ACTIVATIONS = {
    "gelu": functools.partial(jax.nn.gelu, approximate=False),
    "gelu_new": functools.partial(jax.nn.gelu, approximate=True),
    "gelu_pytorch_tanh": functools.partial(jax.nn.gelu, approximate=True),
    "relu": jax.nn.relu,
    "silu": jax.nn.silu,
    "swish": jax.nn.silu,
}


def activation(name: str):
    """The activation function for an HF `hidden_act` name."""
    if name not in ACTIVATIONS:
        raise ValueError(
            f"hidden_act={name!r} is not supported; choose one of {sorted(ACTIVATIONS)}"
        )
    return ACTIVATIONS[name]


def attention_bias(mask: jax.Array) -> jax.Array:
    """(B, L) 1/0 key mask -> (B, 1, 1, L) additive bias: 0 where kept, float32 min where masked.

    The minimum (not -inf) matches HF and keeps a fully masked row finite.
    """
    return jnp.where(mask[:, None, None, :] > 0, 0.0, jnp.finfo(jnp.float32).min).astype(
        jnp.float32
    )


class Dense(nn.Dense):
    """`nn.Dense` (same parameters, `kernel` and `bias`) that multiplies a 2-D matrix: the
    leading axes are merged first and split again after.

    Why: XLA on the CPU runs a dense layer's forward + backward on (B, L, D) activations slower
    than the same matmuls on (B * L, D), where the kernel gradient contracts one axis instead of
    two (the cause inside XLA was not traced further). Measured on the 2-core AMD EPYC (Zen 4),
    MiniLM shapes, same process: the MLP's forward + backward 237 instead of 275 ms, a whole
    MiniLM training step 2861-2866 instead of 3189-3208 ms (medians of 6 alternated steps, two
    runs). The parameters and their HF names are unchanged.
    """

    @nn.compact
    def __call__(self, inputs: jax.Array) -> jax.Array:
        lead = inputs.shape[:-1]
        y = super().__call__(inputs.reshape(-1, inputs.shape[-1]))
        return y.reshape(*lead, self.features)


def dense(features: int, name: str, dtype: Dtype, init_std: float) -> Dense:
    """A Linear layer initialised like HF: N(0, initializer_range) weights, zero bias."""
    return Dense(
        features,
        name=name,
        dtype=dtype,
        param_dtype=jnp.float32,
        kernel_init=nn.initializers.normal(init_std),
    )


def layer_norm(name: str, eps: float, dtype: Dtype) -> nn.LayerNorm:
    return nn.LayerNorm(epsilon=eps, name=name, dtype=dtype, param_dtype=jnp.float32)


def _mix32(x: jax.Array) -> jax.Array:
    """An avalanche hash of uint32 words (Wellons' "lowbias32" constants): each output bit
    depends on every input bit, so consecutive counters give unrelated words."""
    x = x ^ (x >> 16)
    x = x * jnp.uint32(0x21F0AAAD)
    x = x ^ (x >> 15)
    x = x * jnp.uint32(0xD35A2D97)
    return x ^ (x >> 15)


def keep_mask(key: jax.Array, shape: tuple[int, ...], rate: float) -> jax.Array:
    """Bernoulli(1 - rate) booleans: a hash of (key, element index) compared with a threshold.

    `key` is a jax PRNG key (typed, or a legacy uint32 array, any implementation). The mask is
    a pure function of the key and the shape, so dropout keys derived from (seed, step) keep
    runs resumable and reproducible.
    """
    words = (
        jax.random.key_data(key) if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key) else key
    )
    words = words.reshape(-1).astype(jnp.uint32)
    seed = jnp.uint32(0x9E3779B9)
    for w in words:  # 2 (threefry) or 4 (rbg) words -> two 32-bit seeds
        seed = _mix32(seed ^ w)
    seed2 = _mix32(seed ^ jnp.uint32(0x85EBCA6B))
    size = math.prod(shape)
    if size >= 2**32:
        raise ValueError(
            f"dropout over {size} elements: more than the 2**32 a uint32 counter covers"
        )
    index = lax.iota(jnp.uint32, size).reshape(shape)
    bits = _mix32(_mix32(index ^ seed) + seed2)
    threshold = jnp.uint32(min(round(rate * 2**32), 2**32 - 1))
    return bits >= threshold


class Dropout(nn.Module):
    """Inverted dropout (zero with probability `rate`, scale the rest by 1/(1 - rate)) drawing
    its mask with `keep_mask` from the `dropout` rng stream.

    Same contract as flax's `nn.Dropout`, different random numbers. Why: flax draws the mask
    with jax.random.bernoulli, which on CPU generates the bits in a separate loop that XLA
    cannot fuse; for the B x H x L x L attention probabilities of a MiniLM step that was about
    a fifth of the whole training step. The hash is a dozen integer ops per element that XLA
    fuses into the op consuming the mask (see README, Performance).
    """

    rate: float

    @nn.compact
    def __call__(self, x: jax.Array, deterministic: bool) -> jax.Array:
        if deterministic or self.rate == 0.0:
            return x
        if self.rate >= 1.0:
            return jnp.zeros_like(x)
        keep = keep_mask(self.make_rng("dropout"), x.shape, self.rate)
        return jnp.where(keep, x / jnp.asarray(1.0 - self.rate, x.dtype), jnp.zeros((), x.dtype))


class SelfAttention(nn.Module):
    """Multi-head scaled dot-product self-attention; the output projection is the caller's.

    Submodules `query`, `key`, `value`. Returns the concatenated heads (B, L, D).
    """

    num_heads: int
    dropout_rate: float
    init_std: float = 0.02
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, bias: jax.Array | None, train: bool) -> jax.Array:
        b, length, d = x.shape
        if d % self.num_heads:
            raise ValueError(f"hidden size {d} is not divisible by {self.num_heads} heads")
        head_dim = d // self.num_heads

        def heads(name):
            y = dense(d, name, self.dtype, self.init_std)(x)
            return y.reshape(b, length, self.num_heads, head_dim)

        q, k, v = heads("query"), heads("key"), heads("value")
        dropout = train and self.dropout_rate > 0.0
        form = attention_form(jax.default_backend(), q.dtype, head_dim, bias is None, dropout)
        out = None
        if form == "loop":
            out = example_by_example_attention(q, k, v, bias)
        elif form == "fused":
            out = fused_attention(q, k, v)
        if out is None:
            probs = jax.nn.softmax(_scores(q, k, bias), axis=-1)
            probs = Dropout(self.dropout_rate)(probs, deterministic=not train)
            out = jnp.einsum("bhqk,bkhd->bqhd", probs.astype(self.dtype), v)
        return out.reshape(b, length, d)


def _scores(q: jax.Array, k: jax.Array, bias: jax.Array | None) -> jax.Array:
    """(..., Lq, H, d), (..., Lk, H, d) -> (..., H, Lq, Lk) scaled scores (+ bias), in float32:
    the additive mask and softmax need the range."""
    scores = jnp.einsum("...qhd,...khd->...hqk", q, k, preferred_element_type=jnp.float32)
    scores = scores / jnp.sqrt(jnp.float32(q.shape[-1]))
    return scores if bias is None else scores + bias


def attention_form(backend: str, dtype, head_dim: int, unmasked: bool, dropout: bool) -> str:
    """Which form SelfAttention computes: "batched" (B x H x L x L scores at once; the only one
    with attention dropout), "loop" (`example_by_example_attention`: the CPU without dropout)
    or "fused" (`fused_attention`: cuDNN's fused kernel on a GPU, without dropout or mask, in
    bf16 or fp16, heads of at most 128 and a multiple of 8, what the kernel takes)."""
    if dropout or not _OTHER_FORMS.get():
        return "batched"
    if backend == "cpu":
        return "loop"
    half = jnp.dtype(dtype) in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))
    if backend == "gpu" and unmasked and half and head_dim % 8 == 0 and head_dim <= 128:
        return "fused"
    return "batched"


@contextlib.contextmanager
def batched_attention():
    """Within this block, SelfAttention is traced in its batched form on every backend.

    For counting a step's FLOPs (mh3.bench): XLA's cost analysis counts a loop's body once, so
    `example_by_example_attention` would hide all but one example's attention, and neither it
    nor the jaxpr count sees inside cuDNN's fused kernel.
    """
    token = _OTHER_FORMS.set(False)
    try:
        yield
    finally:
        _OTHER_FORMS.reset(token)


def fused_attention(q: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array | None:
    """softmax(q k^T / sqrt(d)) v by cuDNN's fused (flash) kernel, forward and backward; None
    on a GPU older than Ampere or where cuDNN refuses while tracing (none found, too old), and
    the caller computes the batched form instead. q, k, v: (B, L, H, d), the layout of
    jax.nn.dot_product_attention. Why: the batched form writes B x H x L x L scores to memory;
    for the AudioSet AST (1,214 tokens) on an H200 in bf16 its attention core took 8.8 ms
    forward + backward at batch 32 against cuDNN's 2.0 (PyTorch SDPA 1.9), and its train step
    ran out of memory at batch 64 (README, GPU and TPU). Masked inputs (padded text) keep the batched form: float32's
    minimum as a bf16 bias is -inf, and cuDNN's padding mask also zeroes the padded queries.
    """
    capability = getattr(jax.local_devices()[0], "compute_capability", "0.0")
    if tuple(int(x) for x in capability.split(".")[:2]) < (8, 0):
        return None  # the kernel needs Ampere or newer; jax would only fail when compiling
    try:
        return jax.nn.dot_product_attention(q, k, v, implementation="cudnn")
    except RuntimeError:  # jax raises this when cuDNN is missing or cannot run here
        return None


def example_by_example_attention(
    q: jax.Array, k: jax.Array, v: jax.Array, bias: jax.Array | None
) -> jax.Array:
    """softmax(q k^T / sqrt(d) + bias) v without dropout, one example at a time; for the CPU.

    q, k, v: (B, L, H, d); bias: None or (B, 1, 1, L). Returns (B, L, H, d), the values of the
    batched form in `SelfAttention` up to float rounding. Why: the loop keeps one example's
    H x L x L scores in cache instead of writing all B of them to memory and reading them back
    several times, and the backward pass recomputes the probabilities from each row's saved max
    and sum instead of storing them (for the AudioSet AST at batch 32 that tensor is 2.3 GB per
    layer). PyTorch's fused CPU attention avoids the same traffic. On the 2-core AMD EPYC (Zen 4),
    forward + backward of the attention core: 98-100 against 172-191 ms at the demo AST's 602
    tokens, about 1.25x faster at the AudioSet AST's 1,214, within noise at MiniLM's 128 (README,
    Performance). Not for GPUs and TPUs, where the loop would serialise the batch. The bias gets
    no gradient (it is a mask).
    """

    if bias is None:  # adding zeros is exact, and one code path is simpler than two
        bias = jnp.zeros((q.shape[0], 1, 1, k.shape[1]), jnp.float32)

    def one(x):  # one example: q, k, v (L, H, d), bias (1, 1, L) -> out, (row max, row sum)
        q, k, v, bias = x
        scores = _scores(q, k, bias)
        top = jnp.max(scores, axis=-1, keepdims=True)
        e = jnp.exp(scores - top)
        total = jnp.sum(e, axis=-1, keepdims=True)
        out = jnp.einsum("hqk,khd->qhd", (e / total).astype(v.dtype), v)
        # Not the log-sum-exp top + log(total): with a fully masked row, top is float32's
        # minimum and log(total) vanishes in the sum.
        return out, (top, total)

    @jax.custom_vjp
    def attend(q, k, v):
        return lax.map(one, (q, k, v, bias))[0]

    def attend_forward(q, k, v):
        out, (top, total) = lax.map(one, (q, k, v, bias))
        return out, (q, k, v, bias, out, top, total)

    def attend_backward(saved, d_out):
        def one_backward(x):
            q, k, v, bias, out, top, total, d_out = x
            probs = jnp.exp(_scores(q, k, bias) - top) / total
            d_v = jnp.einsum("hqk,qhd->khd", probs.astype(d_out.dtype), d_out)
            d_probs = jnp.einsum("qhd,khd->hqk", d_out, v, preferred_element_type=jnp.float32)
            # sum_k P * dP over each row equals sum_d dO * O (O = P V): L x d work, not L x L.
            rows = jnp.einsum("qhd,qhd->hq", d_out, out, preferred_element_type=jnp.float32)
            d_scores = probs * (d_probs - rows[..., None]) / jnp.sqrt(jnp.float32(q.shape[-1]))
            d_scores = d_scores.astype(q.dtype)
            d_q = jnp.einsum("hqk,khd->qhd", d_scores, k)
            d_k = jnp.einsum("hqk,qhd->khd", d_scores, q)
            return d_q, d_k, d_v

        return lax.map(one_backward, (*saved, d_out))

    attend.defvjp(attend_forward, attend_backward)
    return attend(q, k, v)


class Projection(nn.Module):
    """dense -> dropout -> + residual [-> LayerNorm]: HF's `*Output` blocks.

    Submodules `dense` and, when `eps` is set (post-LN), `LayerNorm`.
    """

    features: int
    dropout_rate: float
    eps: float | None = None
    init_std: float = 0.02
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, residual: jax.Array, train: bool) -> jax.Array:
        y = dense(self.features, "dense", self.dtype, self.init_std)(x)
        y = Dropout(self.dropout_rate)(y, deterministic=not train) + residual
        if self.eps is not None:
            y = layer_norm("LayerNorm", self.eps, self.dtype)(y)
        return y


class Intermediate(nn.Module):
    """The MLP's expansion: dense -> activation (HF `intermediate`, submodule `dense`)."""

    features: int
    act: str
    init_std: float = 0.02
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        return activation(self.act)(dense(self.features, "dense", self.dtype, self.init_std)(x))


class LayerSettings(nn.Module):
    """The fields both layer layouts share (a base class; use PostLNLayer or PreLNLayer)."""

    num_heads: int
    intermediate_size: int
    act: str
    hidden_dropout: float
    attention_dropout: float
    eps: float
    init_std: float = 0.02
    dtype: Dtype = jnp.float32


class _AttentionBlock(nn.Module):
    """HF's `attention` scope: `self` (q/k/v) and `output` (dense [+ LayerNorm])."""

    num_heads: int
    dropout: float
    attention_dropout: float
    eps: float | None
    init_std: float
    dtype: Dtype
    self_name: str = "self"

    @nn.compact
    def __call__(self, x, residual, bias, train):
        ctx = SelfAttention(
            self.num_heads, self.attention_dropout, self.init_std, self.dtype, name=self.self_name
        )(x, bias, train)
        return Projection(
            residual.shape[-1], self.dropout, self.eps, self.init_std, self.dtype, name="output"
        )(ctx, residual, train)


class PostLNLayer(LayerSettings):
    """BERT layer: x = LN(x + Attn(x)); x = LN(x + MLP(x))."""

    @nn.compact
    def __call__(self, x: jax.Array, bias: jax.Array | None, train: bool) -> jax.Array:
        d = x.shape[-1]
        x = _AttentionBlock(
            self.num_heads,
            self.hidden_dropout,
            self.attention_dropout,
            self.eps,
            self.init_std,
            self.dtype,
            name="attention",
        )(x, x, bias, train)
        h = Intermediate(
            self.intermediate_size, self.act, self.init_std, self.dtype, name="intermediate"
        )(x)
        return Projection(
            d, self.hidden_dropout, self.eps, self.init_std, self.dtype, name="output"
        )(h, x, train)


class PreLNLayer(LayerSettings):
    """ViT/AST layer: x = x + Attn(LN(x)); x = x + MLP(LN(x)).

    HF names: `layernorm_before`, `attention/attention/{query,key,value}`,
    `attention/output/dense`, `layernorm_after`, `intermediate/dense`, `output/dense`.
    """

    @nn.compact
    def __call__(self, x: jax.Array, bias: jax.Array | None, train: bool) -> jax.Array:
        d = x.shape[-1]
        h = layer_norm("layernorm_before", self.eps, self.dtype)(x)
        x = _AttentionBlock(
            self.num_heads,
            self.hidden_dropout,
            self.attention_dropout,
            None,
            self.init_std,
            self.dtype,
            self_name="attention",
            name="attention",
        )(h, x, bias, train)
        h = layer_norm("layernorm_after", self.eps, self.dtype)(x)
        h = Intermediate(
            self.intermediate_size, self.act, self.init_std, self.dtype, name="intermediate"
        )(h)
        return Projection(d, self.hidden_dropout, None, self.init_std, self.dtype, name="output")(
            h, x, train
        )


def layer_kwargs(config, dtype: Dtype) -> dict:
    """LayerSettings fields from a config with HF's names (BertConfig, ASTConfig)."""
    return dict(
        num_heads=config.num_attention_heads,
        intermediate_size=config.intermediate_size,
        act=config.hidden_act,
        hidden_dropout=config.hidden_dropout_prob,
        attention_dropout=config.attention_probs_dropout_prob,
        eps=config.layer_norm_eps,
        init_std=config.initializer_range,
        dtype=dtype,
    )


class Encoder(nn.Module):
    """A stack of `num_layers` layers named `layer_0`, `layer_1`, ... (HF `encoder.layer.N`).

    Attributes:
      layer_cls: PostLNLayer or PreLNLayer.
      layer_kwargs: the LayerSettings fields, the same for every layer.
      num_layers: depth.
    """

    layer_cls: Any
    layer_kwargs: dict
    num_layers: int

    @nn.compact
    def __call__(self, x: jax.Array, bias: jax.Array | None, train: bool) -> jax.Array:
        for i in range(self.num_layers):
            x = self.layer_cls(**self.layer_kwargs, name=f"layer_{i}")(x, bias, train)
        return x
