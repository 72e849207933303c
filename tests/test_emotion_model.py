"""The emotion-teacher MLP: shapes, padding, the paper's output ReLU, and a frozen table."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mh3.models import emotion

V, D, L, C = 50, 8, 6, 3


def make(**kw):
    settings = dict(
        num_labels=C, vocab_size=V, embed_dim=D, max_length=L, num_layers=3, hidden_size=16
    )
    settings.update(kw)
    return emotion.EmotionMLP(**settings)


def table(seed=1):
    return jnp.asarray(np.random.RandomState(seed).uniform(size=(V, D)), jnp.float32)


def batch(n=4, length=L, seed=0):
    ids = np.random.RandomState(seed).randint(1, V, size=(n, length)).astype(np.int32)
    return {"input_ids": jnp.asarray(ids)}


def test_params_hold_no_table():
    model = make()
    params = emotion.init_params(model, seed=0)
    assert set(params) == {"dense_0", "dense_1", "output"}
    assert params["dense_0"]["kernel"].shape == (L * D, 16)
    assert params["output"]["kernel"].shape == (16, C)


def test_forward_uses_table_rows():
    model = make(num_layers=1)
    params = emotion.init_params(model, seed=0)
    t = table()
    b = batch()
    logits, out = model.apply({"params": params, emotion.TABLE: {"embedding": t}}, b)
    assert logits.shape == (4, C) and logits.dtype == jnp.float32
    np.testing.assert_array_equal(out["hidden"], t[b["input_ids"]])
    want = out["hidden"].reshape(4, -1) @ params["output"]["kernel"] + params["output"]["bias"]
    np.testing.assert_allclose(logits, want, rtol=1e-5, atol=1e-5)
    assert out["pooled"].shape == (4, L * D)


def test_short_sequences_are_padded_with_pad_rows():
    model = make(pad_token_id=0)
    params = emotion.init_params(model, seed=0)
    variables = {"params": params, emotion.TABLE: {"embedding": table()}}
    short = batch(length=4)
    padded = {"input_ids": jnp.pad(short["input_ids"], ((0, 0), (0, L - 4)))}
    a, out = model.apply(variables, short)
    b, _ = model.apply(variables, padded)
    np.testing.assert_allclose(a, b, rtol=1e-6)
    assert out["pooled"].shape == (4, 16)
    with pytest.raises(ValueError, match="exceeds max_length"):
        model.apply(variables, batch(length=L + 1))


def test_output_relu_quirk():
    plain, quirk = make(), make(output_relu=True)
    params = emotion.init_params(plain, seed=0)
    variables = {"params": params, emotion.TABLE: {"embedding": table()}}
    a, _ = plain.apply(variables, batch())
    b, _ = quirk.apply(variables, batch())
    assert (np.asarray(a) < 0).any()
    np.testing.assert_allclose(b, np.maximum(np.asarray(a), 0), rtol=1e-6)
    # train mode: dropout also on the logits, so some positive logits become 0
    c, _ = quirk.apply(variables, batch(n=64), train=True, rngs={"dropout": jax.random.PRNGKey(0)})
    assert (np.asarray(c) == 0).mean() > (np.asarray(b) == 0).mean() * 0.5


def test_table_gets_no_gradient_in_a_training_step():
    model = make(dropout_rate=0.1)
    params = emotion.init_params(model, seed=0)
    t = table()
    labels = jnp.asarray([0, 1, 2, 1])
    b = batch()
    # torch Adam(weight_decay) as the paper: an L2 term would move anything it is applied to.
    tx = optax.chain(optax.add_decayed_weights(0.1), optax.adam(1e-2))
    opt_state = tx.init(params)

    def loss(params, t):
        logits, _ = model.apply(
            {"params": params, emotion.TABLE: {"embedding": t}},
            b,
            train=True,
            rngs={"dropout": jax.random.PRNGKey(0)},
        )
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    grads, table_grad = jax.grad(loss, argnums=(0, 1))(params, t)
    assert float(jnp.abs(table_grad).max()) == 0.0  # stop_gradient inside the module
    updates, _ = tx.update(grads, opt_state, params)
    new_params = optax.apply_updates(params, updates)
    before = np.asarray(t).copy()
    # the table is not in the optimised tree, so a step cannot change it
    assert jax.tree.structure(new_params) == jax.tree.structure(params)
    np.testing.assert_array_equal(np.asarray(t), before)
    moved = jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()), new_params, params)
    assert all(v > 0 for v in jax.tree.leaves(moved))
    assert loss(new_params, t) < loss(params, t)
