"""The CPU's attention (mh3.models.transformer.example_by_example_attention): the same values
and gradients as the batched softmax attention, masks included; when SelfAttention uses it; and
that mh3.bench still counts every example's attention FLOPs.

The parity tests of whole models with HF PyTorch run through it too, because their evaluation
has no attention dropout: the logits in tests/test_bert.py and tests/test_ast.py, and BERT's
gradients against torch autograd.
"""

import functools

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
