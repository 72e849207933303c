"""mh3's hashed dropout (mh3.models.transformer.Dropout): the statistics of its keep mask, its
determinism per key, and that it is what the models use in training mode."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mh3.models import transformer
from mh3.models.bert import BertClassifier, BertConfig

SHAPE = (8, 4, 64, 64)  # 131,072 elements: the binomial std of the mean is ~8e-4 at rate 0.1


@pytest.mark.parametrize("impl", ["threefry2x32", "rbg"])
@pytest.mark.parametrize("rate", [0.1, 0.5])
def test_keep_mask_statistics(impl, rate):
    key = jax.random.key(0, impl=impl)
    mask = np.asarray(transformer.keep_mask(key, SHAPE, rate)).reshape(-1).astype(np.float64)
    sigma = np.sqrt(rate * (1 - rate) / mask.size)
    assert abs(mask.mean() - (1 - rate)) < 5 * sigma
    # Neighbours along the last axis and across rows carry no correlation.
    for lag in (1, SHAPE[-1], SHAPE[-1] * SHAPE[-2]):
        assert abs(np.corrcoef(mask[:-lag], mask[lag:])[0, 1]) < 0.02
    # Another key gives an independent mask: agreement ~ p^2 + (1-p)^2.
    other = np.asarray(transformer.keep_mask(jax.random.fold_in(key, 1), SHAPE, rate))
    agree = (other.reshape(-1) == mask.astype(bool)).mean()
    assert abs(agree - ((1 - rate) ** 2 + rate**2)) < 0.01


def test_keep_mask_is_a_function_of_the_key():
    typed = jax.random.key(7)
    legacy = jax.random.PRNGKey(7)  # raw uint32 words of the same key
    a = transformer.keep_mask(typed, (1000,), 0.3)
    np.testing.assert_array_equal(a, transformer.keep_mask(typed, (1000,), 0.3))
    np.testing.assert_array_equal(a, transformer.keep_mask(legacy, (1000,), 0.3))
    np.testing.assert_array_equal(
        a, jax.jit(transformer.keep_mask, static_argnums=(1, 2))(typed, (1000,), 0.3)
    )


def test_dropout_module_scales_and_passes_through():
    x = jnp.ones((64, 256))
    layer = transformer.Dropout(0.25)
    rngs = {"dropout": jax.random.key(1)}
    y = np.asarray(layer.apply({}, x, deterministic=False, rngs=rngs))
    assert set(np.unique(y)) == {0.0, np.float32(1 / 0.75)}
    assert abs(y.mean() - 1.0) < 0.03  # inverted dropout keeps the expectation
    np.testing.assert_array_equal(layer.apply({}, x, deterministic=True), x)
    np.testing.assert_array_equal(transformer.Dropout(0.0).apply({}, x, deterministic=False), x)
    assert not np.asarray(
        transformer.Dropout(1.0).apply({}, x, deterministic=False, rngs=rngs)
    ).any()


def test_bert_training_forward_uses_the_dropout_rng():
    config = BertConfig(
        vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=37, max_position_embeddings=64, num_labels=3,
    )  # fmt: skip
    model = BertClassifier(config)
    inputs = {
        "input_ids": jnp.arange(2 * 16).reshape(2, 16) % 99,
        "attention_mask": jnp.ones((2, 16)),
    }
    params = model.init(jax.random.key(0), inputs)["params"]

    def logits(seed, train=True):
        out, _ = model.apply(
            {"params": params}, inputs, train=train, rngs={"dropout": jax.random.key(seed)}
        )
        return np.asarray(out)

    np.testing.assert_array_equal(logits(1), logits(1))
    assert np.abs(logits(1) - logits(2)).max() > 1e-4
    assert np.abs(logits(1) - logits(1, train=False)).max() > 1e-4
    np.testing.assert_array_equal(logits(1, train=False), logits(2, train=False))
