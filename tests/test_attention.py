"""The CPU's attention (mh3.models.transformer.example_by_example_attention): the same values
and gradients as the batched softmax attention, masks included; when SelfAttention uses it; and
that mh3.bench still counts every example's attention FLOPs. The GPU's fused form
(transformer.fused_attention, cuDNN): when it is chosen, that jax's function computes our
attention, and that SelfAttention falls back to the batched form where cuDNN refuses.

The parity tests of whole models with HF PyTorch run through it too, because their evaluation
has no attention dropout: the logits in tests/test_bert.py and tests/test_ast.py, and BERT's
gradients against torch autograd.
"""

import functools
import types

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mh3 import bench
from mh3.models import transformer
from mh3.models.ast import ASTClassifier
from mh3.train import parallel, steps
from mh3.train import state as state_lib

B, L, H, D = 3, 37, 4, 8


def batched(q, k, v, bias):
    """The textbook form: every example's H x L x L probabilities at once."""
    scores = jnp.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(q.shape[-1])
    probs = jax.nn.softmax(scores if bias is None else scores + bias, axis=-1)
    return jnp.einsum("bhqk,bkhd->bqhd", probs, v)


@pytest.mark.parametrize("masked", ["none", "some keys", "whole rows"])
def test_values_and_gradients_match_the_batched_form(masked):
    q, k, v, weights = jax.random.normal(jax.random.PRNGKey(0), (4, B, L, H, D))
    mask = np.ones((B, L), np.float32)
    if masked == "some keys":
        mask[1, 20:] = 0
        mask[2, 5:9] = 0
    elif masked == "whole rows":  # every key masked: uniform probabilities, as in HF
        mask[0] = 0
        mask[2, 30:] = 0
    bias = None if masked == "none" else transformer.attention_bias(jnp.asarray(mask))

    def loss(fn, q, k, v):
        return jnp.sum(fn(q, k, v, bias) * weights)

    for wrap in (jax.jit, lambda f: f):
        want, want_grads = wrap(jax.value_and_grad(functools.partial(loss, batched), (0, 1, 2)))(
            q, k, v
        )
        ours = functools.partial(loss, transformer.example_by_example_attention)
        got, got_grads = wrap(jax.value_and_grad(ours, (0, 1, 2)))(q, k, v)
        assert abs(float(got - want)) <= 1e-4 * abs(float(want))
        for g, w in zip(got_grads, want_grads, strict=True):
            assert float(jnp.max(jnp.abs(g - w))) <= 5e-6


def _has_loop(fn, *args) -> bool:
    return "scan" in str(jax.make_jaxpr(fn)(*args))


def test_self_attention_loops_over_examples_only_without_dropout_on_the_cpu():
    x = jax.random.normal(jax.random.PRNGKey(1), (2, 8, 16))
    rngs = {"dropout": jax.random.PRNGKey(2)}
    for rate in (0.0, 0.1):
        layer = transformer.SelfAttention(num_heads=2, dropout_rate=rate)
        params = layer.init(jax.random.PRNGKey(0), x, None, False)

        def apply(x, train, layer=layer, params=params):
            return layer.apply(params, x, None, train, rngs=rngs)

        assert _has_loop(functools.partial(apply, train=False), x)  # evaluation
        assert _has_loop(functools.partial(apply, train=True), x) == (rate == 0.0)
        with transformer.batched_attention():
            assert not _has_loop(functools.partial(apply, train=False), x)
        assert _has_loop(functools.partial(apply, train=False), x)  # the block restored it
        # Both forms give the same output.
        with transformer.batched_attention():
            want = apply(x, train=False)
        np.testing.assert_allclose(apply(x, train=False), want, atol=1e-6)


def test_bench_counts_every_examples_attention():
    """XLA's cost analysis counts a loop's body once: counted with the loop, a tiny AST step
    (4 examples per device) would show only one example's attention."""
    config = bench.make_config("ast-tiny")
    host_batch = bench.make_batch(config, 4 * parallel.device_count(), 0)
    model = ASTClassifier(config)
    params = model.init(jax.random.PRNGKey(0), {"input_values": host_batch["input_values"][:1]})
    state = state_lib.create(model.apply, params["params"], optax.adam(1e-4), jax.random.PRNGKey(1))
    state, batch = parallel.replicate(state), parallel.shard(host_batch)
    p_train = parallel.pmap(functools.partial(steps.train_step, loss_fn=steps.classification_loss))
    looped = p_train.lower(state, batch).cost_analysis()
    looped = float((looped[0] if isinstance(looped, list | tuple) else looped)["flops"])
    counted, source = bench.step_flops(state, batch)
    counted /= parallel.device_count()
    assert source == bench.FLOPS_XLA
    tokens, d, layers = config.num_positions, config.hidden_size, config.num_hidden_layers
    # The matmuls alone, per example: QK^T and PV forward, four such products backward.
    matmuls = 6 * 2 * tokens * tokens * d * layers
    # The 3 examples the loop hid, with their softmax work (a few FLOPs per score) on top.
    assert 3 * matmuls <= counted - looped <= 3 * 2 * matmuls


def test_attention_form_per_backend():
    form = transformer.attention_form
    bf16, f32 = jnp.bfloat16, jnp.float32
    assert form("cpu", f32, 64, True, False) == "loop"
    assert form("cpu", f32, 64, False, False) == "loop"  # masks included
    assert form("cpu", f32, 64, True, True) == "batched"  # attention dropout
    assert form("gpu", bf16, 64, True, False) == "fused"  # the AST in bf16
    assert form("gpu", jnp.float16, 128, True, False) == "fused"
    assert form("gpu", f32, 64, True, False) == "batched"  # cuDNN's kernel is half precision
    assert form("gpu", bf16, 64, False, False) == "batched"  # padded text
    assert form("gpu", bf16, 64, True, True) == "batched"
    assert form("gpu", bf16, 12, True, False) == "batched"  # not a multiple of 8
    assert form("gpu", bf16, 256, True, False) == "batched"
    assert form("tpu", bf16, 64, True, False) == "batched"
    with transformer.batched_attention():
        assert form("cpu", f32, 64, True, False) == form("gpu", bf16, 64, True, False) == "batched"


def test_the_fused_form_is_our_attention():
    """cuDNN's kernel implements jax.nn.dot_product_attention; its XLA implementation (which
    runs here) gives our batched form's values and gradients, so layout and scale agree."""
    q, k, v, weights = jax.random.normal(jax.random.PRNGKey(3), (4, B, L, H, D))

    def loss(fn, q, k, v):
        return jnp.sum(fn(q, k, v) * weights)

    jax_xla = functools.partial(jax.nn.dot_product_attention, implementation="xla")
    want, want_grads = jax.value_and_grad(
        functools.partial(loss, lambda q, k, v: batched(q, k, v, None)), (0, 1, 2)
    )(q, k, v)
    got, got_grads = jax.value_and_grad(functools.partial(loss, jax_xla), (0, 1, 2))(q, k, v)
    assert abs(float(got - want)) <= 1e-4 * abs(float(want))
    for g, w in zip(got_grads, want_grads, strict=True):
        assert float(jnp.max(jnp.abs(g - w))) <= 5e-6


def test_self_attention_falls_back_where_cudnn_refuses(monkeypatch):
    """As on a GPU without cuDNN (or older than Ampere): the fused form is chosen, jax refuses
    while tracing, and the layer computes the batched form (no loop, no cuDNN call)."""
    x = jax.random.normal(jax.random.PRNGKey(1), (2, 8, 16)).astype(jnp.bfloat16)
    layer = transformer.SelfAttention(num_heads=2, dropout_rate=0.0, dtype=jnp.bfloat16)
    params = layer.init(jax.random.PRNGKey(0), x, None, False)
    with transformer.batched_attention():
        want = layer.apply(params, x, None, False)
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    assert transformer.attention_form(jax.default_backend(), x.dtype, 8, True, False) == "fused"
    qkv = x.reshape(2, 8, 2, 8)
    with pytest.raises(RuntimeError, match="cuDNN"):  # what the fallback catches
        jax.nn.dot_product_attention(qkv, qkv, qkv, implementation="cudnn")
    for capability in ("7.5", "9.0"):  # a Turing GPU (too old); a Hopper one, but no cuDNN here
        gpu = types.SimpleNamespace(compute_capability=capability)
        monkeypatch.setattr(jax, "local_devices", lambda gpu=gpu: [gpu])
        assert transformer.fused_attention(qkv, qkv, qkv) is None
    jaxpr = str(jax.make_jaxpr(lambda x: layer.apply(params, x, None, True))(x))
    assert "scan" not in jaxpr and "cudnn" not in jaxpr
    got = layer.apply(params, x, None, False)
    np.testing.assert_array_equal(np.asarray(got, np.float32), np.asarray(want, np.float32))
