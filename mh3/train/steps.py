"""Pure train and eval steps, run under pmap (mh3.train.parallel) over the `batch` axis.

Every batch carries `mask` (1 = real example, 0 = padding row). Losses are weighted means over
the real examples of the GLOBAL batch: each device divides its masked sum by the example count
summed over all devices, and the gradients are summed over devices. So a global batch gives
the same update on 1 or on 4 devices, however the padding falls.

A `loss_fn(params, apply_fn, batch, dropout_rng, train) -> (per_example_loss (B,), aux)` says
what is optimised; `aux` must hold `logits`, and may hold `terms`: named per-example parts of
the loss (the student's `loss_ce`, `loss_kd`), reported like the loss. Bind it with
functools.partial: `partial(train_step, loss_fn=classification_loss)`.

Metrics of a step: `loss`, `count` (real examples of the global batch), `accuracy` (one label
per example), each of `aux['terms']`, and for train steps `grad_norm` (the global norm of the
summed gradients, before any clipping) and `finite`.
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax
from jax import lax

from mh3.train.parallel import AXIS
from mh3.train.state import TrainState

LossFn = Callable[..., tuple[jax.Array, dict]]


def classification_loss(params, apply_fn, batch, dropout_rng, train):
    """Softmax cross-entropy of a classifier `apply_fn(vars, batch, train, rngs) -> (logits, out)`.

    The model sees only its input keys; `label`, `mask` and `index` stay with the loop.
    """
    inputs = {k: v for k, v in batch.items() if k not in ("label", "mask", "index")}
    logits, _ = apply_fn({"params": params}, inputs, train=train, rngs={"dropout": dropout_rng})
    logits = logits.astype(jnp.float32)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"])
    return loss, {"logits": logits}


def _masked_mean(values: jax.Array, mask: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(sum over this device / real examples over all devices, global count)."""
    count = lax.psum(mask.sum(), AXIS)
    return (values * mask).sum() / jnp.maximum(count, 1.0), count


def _metrics(loss: jax.Array, aux: dict, batch: dict) -> dict:
    mask = batch["mask"].astype(jnp.float32)
    local_loss, count = _masked_mean(loss, mask)
    metrics = {"loss": lax.psum(local_loss, AXIS), "count": count}
    for name, values in aux.get("terms", {}).items():
        metrics[name] = lax.psum(_masked_mean(values.astype(jnp.float32), mask)[0], AXIS)
    logits = aux["logits"]
    # Accuracy only for one class index per example (multi-hot targets have no argmax match).
    if "label" in batch and logits.ndim == 2 and batch["label"].ndim == 1:
        correct = (jnp.argmax(logits, -1) == batch["label"]).astype(jnp.float32)
        metrics["accuracy"] = lax.psum(_masked_mean(correct, mask)[0], AXIS)
    return metrics


def train_step(state: TrainState, batch: dict, *, loss_fn: LossFn) -> tuple[TrainState, dict]:
    """One optimizer step on a device's share of the global batch.

    A step whose loss or gradients are not finite leaves the state untouched (so the last
    good parameters survive for the checkpoint) and reports `finite = 0`; the loop stops.
    """
    dropout_rng = jax.random.fold_in(
        jax.random.fold_in(state.rng, state.step), lax.axis_index(AXIS)
    )
    mask = batch["mask"].astype(jnp.float32)

    def objective(params):
        per_example, aux = loss_fn(params, state.apply_fn, batch, dropout_rng, True)
        return _masked_mean(per_example.astype(jnp.float32), mask)[0], (per_example, aux)

    (_, (per_example, aux)), grads = jax.value_and_grad(objective, has_aux=True)(state.params)
    # Each device's gradient is its share of the global mean, so the total is their sum.
    grads = lax.psum(grads, AXIS)
    metrics = _metrics(per_example, aux, batch)
    metrics["grad_norm"] = optax.tree.norm(grads)
    finite = jnp.isfinite(metrics["loss"]) & jnp.isfinite(metrics["grad_norm"])
    metrics["finite"] = finite.astype(jnp.float32)

    updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
    if state.plateau is not None:
        updates = jax.tree.map(lambda u: u * state.plateau.scale.astype(u.dtype), updates)
    new_state = state.replace(
        step=state.step + 1, params=optax.apply_updates(state.params, updates), opt_state=opt_state
    )
    # The step counter still advances so the data order and dropout keys of later steps do
    # not depend on whether an earlier step was skipped.
    kept = jax.tree.map(lambda new, old: jnp.where(finite, new, old), new_state, state)
    return kept.replace(step=state.step + 1), metrics


def eval_step(state: TrainState, batch: dict, *, loss_fn: LossFn) -> dict:
    """Loss, accuracy and the logits (for host-side metrics) of one batch, dropout off."""
    per_example, aux = loss_fn(state.params, state.apply_fn, batch, state.rng, False)
    metrics = _metrics(per_example.astype(jnp.float32), aux, batch)
    return {"metrics": metrics, "logits": aux["logits"]}
