"""The emotion teacher (SPEC stage 3): a frozen MM-EMOG table under a small MLP.

input ids (B, L) -> frozen table lookup (B, L, D) -> flatten (B, L*D) -> `num_layers` Linear
layers with ReLU and dropout between them -> logits. With `output_relu` (the paper's quirk)
the logits themselves also pass ReLU and dropout. The attention mask is not used: padding
positions look up the [PAD] row like any other token, as in the paper.

The table is not a parameter: it lives in the `table` variable collection, so
`apply({'params': p, 'table': {'embedding': T}}, batch)` differentiates only `p`. Sequences
shorter than `max_length` are padded with `pad_token_id` (the flattened width is fixed), so
length-bucketed batches work.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

TABLE = "table"  # the variable collection that holds the frozen embedding table


class EmotionMLP(nn.Module):
    """The emotion-teacher classifier.

    `apply({'params': p, 'table': {'embedding': T}}, batch, train=False)` -> `(logits, out)`:
    logits float32 (B, num_labels); `out['hidden']` the looked-up sequence (B, max_length, D);
    `out['pooled']` the features the last Linear layer reads (B, hidden_size), or the flattened
    sequence when `num_layers == 1`.

    Attributes:
      num_labels: classes.
      vocab_size: rows of the table (the tokenizer's vocabulary with its added tokens).
      embed_dim: columns of the table (768 for the paper's MM-EMOG).
      max_length: sequence length the flattened input is built for.
      num_layers: Linear layers (at least 1).
      hidden_size: width of the hidden Linear layers.
      dropout_rate: dropout after every hidden ReLU (and on the logits with `output_relu`).
      output_relu: the paper's ReLU + dropout on the output logits.
      pad_token_id: id used to pad short sequences to `max_length`.
    """

    num_labels: int
    vocab_size: int
    embed_dim: int
    max_length: int
    num_layers: int = 2
    hidden_size: int = 100
    dropout_rate: float = 0.1
    output_relu: bool = False
    pad_token_id: int = 0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, batch: dict, train: bool = False):
        if self.num_layers < 1:
            raise ValueError(f"num_layers={self.num_layers}; the MLP needs at least 1 layer")
        table = self.variable(
            TABLE, "embedding", jnp.zeros, (self.vocab_size, self.embed_dim), jnp.float32
        ).value
        ids = batch["input_ids"]
        length = ids.shape[1]
        if length > self.max_length:
            raise ValueError(f"input length {length} exceeds max_length {self.max_length}")
        if length < self.max_length:
            ids = jnp.pad(
                ids, ((0, 0), (0, self.max_length - length)), constant_values=self.pad_token_id
            )
        # stop_gradient as a second guard: even if a caller moved the table into `params`,
        # no gradient could flow into it.
        hidden = jnp.take(jax.lax.stop_gradient(table), ids, axis=0).astype(self.dtype)
        x = hidden.reshape(ids.shape[0], -1)
        # torch nn.Linear's weight init, U(+-1/sqrt(fan_in)), as the paper's teacher had.
        init = nn.initializers.variance_scaling(1 / 3, "fan_in", "uniform")
        for i in range(self.num_layers - 1):
            x = nn.Dense(self.hidden_size, dtype=self.dtype, kernel_init=init, name=f"dense_{i}")(x)
            x = nn.Dropout(self.dropout_rate)(nn.relu(x), deterministic=not train)
        pooled = x
        logits = nn.Dense(self.num_labels, dtype=self.dtype, kernel_init=init, name="output")(x)
        if self.output_relu:
            logits = nn.Dropout(self.dropout_rate)(nn.relu(logits), deterministic=not train)
        return logits.astype(jnp.float32), {"hidden": hidden, "pooled": pooled}


def example_batch(max_length: int, batch: int = 1) -> dict:
    """A dummy batch for `init` / `eval_shape`."""
    return {"input_ids": jnp.zeros((batch, max_length), jnp.int32)}


def init_params(model: EmotionMLP, seed: int) -> dict:
    """The trainable params only; the (large) placeholder table is never materialised."""

    def init():
        return model.init(jax.random.PRNGKey(seed), example_batch(model.max_length))["params"]

    # Under jit the zeros placeholder of the table is dead code, so it is never allocated.
    return jax.jit(init)()
