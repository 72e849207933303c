"""Optimizers and schedules from a config block (`config.optim`).

Keys of `config.optim` (every one set in the stage config):
  name: `adam_l2` (torch `Adam(weight_decay=wd)`: wd * params added to the gradient, then Adam;
        the paper's optimizer) or `adamw` (decoupled decay, off biases and LayerNorm scales).
  learning_rate, weight_decay, b1, b2, eps.
  schedule: `constant` or `warmup_linear` (linear warm-up for `warmup_steps`, then linear decay
        to 0 at the last step).
  warmup_steps: steps of warm-up (`warmup_linear` only).
  warmup_ratio: warm-up as a fraction of the run's updates, used when warmup_steps is 0 (so a
        short run on a small dataset still spends most of its steps at the full rate).
  clip_norm: global-norm gradient clipping, 0 = off.
  accumulate_steps: gradients of this many batches are averaged before one update
        (optax.MultiSteps); 1 = off.
  plateau_patience, plateau_factor: reduce-on-plateau on the validation loss (epochs);
        patience 0 = off. See mh3.train.state for how it is applied.
  plateau_rule: `torch` (torch's `ReduceLROnPlateau`: the rate is cut on the (patience+1)-th
        epoch without improvement) or `optax` (`optax.contrib.reduce_on_plateau`: cut on the
        patience-th, one epoch earlier). Both protocols default to `torch`: every patience in
        the configs and search spaces is the paper's torch value, so the same number has to
        mean the same schedule; `optax` is kept for runs that want optax's reading.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from mh3.errors import UserError

OPTIMIZERS = ("adam_l2", "adamw")
SCHEDULES = ("constant", "warmup_linear")
PLATEAU_RULES = ("torch", "optax")


def schedule(optim, total_steps: int) -> optax.Schedule:
    """The learning rate as a function of the update count."""
    lr = optim.learning_rate
    if optim.schedule == "constant":
        return optax.constant_schedule(lr)
    if optim.schedule == "warmup_linear":
        if not 0.0 <= optim.warmup_ratio <= 1.0:
            raise UserError(f"config optim.warmup_ratio={optim.warmup_ratio}; use 0..1")
        warmup = optim.warmup_steps or round(optim.warmup_ratio * total_steps)
        warmup = min(warmup, total_steps)
        return optax.join_schedules(
            [
                optax.linear_schedule(0.0, lr, max(warmup, 1)),
                optax.linear_schedule(lr, 0.0, max(total_steps - warmup, 1)),
            ],
            [warmup],
        )
    raise UserError(f"config optim.schedule={optim.schedule!r}; choose one of {SCHEDULES}")


def decay_mask(params) -> dict:
    """True for the weights AdamW decays: matrices and embeddings, not biases or norm scales."""

    def keep(path, leaf):
        name = str(getattr(path[-1], "key", path[-1]))
        return leaf.ndim > 1 and name not in ("bias", "scale")

    return jax.tree_util.tree_map_with_path(keep, params)


def make(
    optim, total_steps: int, *, lr: optax.Schedule | None = None
) -> optax.GradientTransformation:
    """Builds the optimizer named by `optim.name` with clipping, schedule and accumulation.

    Args:
      optim: the `config.optim` block (keys in the module docstring).
      total_steps: optimizer updates in the run (for decaying schedules).
      lr: `schedule(optim, total_steps)` when the caller built it already (to log the rate).

    Raises:
      UserError: unknown optimizer or schedule name.
    """
    lr = lr or schedule(optim, total_steps)
    parts = []
    if optim.clip_norm > 0:
        parts.append(optax.clip_by_global_norm(optim.clip_norm))
    if optim.name == "adam_l2":
        # torch.optim.Adam(weight_decay=wd): grad += wd * param, then plain Adam.
        if optim.weight_decay:
            parts.append(optax.add_decayed_weights(optim.weight_decay))
        parts.append(optax.adam(lr, b1=optim.b1, b2=optim.b2, eps=optim.eps))
    elif optim.name == "adamw":
        parts.append(
            optax.adamw(
                lr,
                b1=optim.b1,
                b2=optim.b2,
                eps=optim.eps,
                weight_decay=optim.weight_decay,
                mask=decay_mask,
            )
        )
    else:
        raise UserError(f"config optim.name={optim.name!r}; choose one of {OPTIMIZERS}")
    tx = optax.chain(*parts)
    if optim.accumulate_steps > 1:
        tx = optax.MultiSteps(tx, every_k_schedule=optim.accumulate_steps)
    return tx


class PlateauState(NamedTuple):
    """State of `torch_plateau`: arrays only, so Orbax checkpoints it with the TrainState."""

    scale: jax.Array  # multiplies the updates (= the learning rate for Adam-family optimizers)
    best: jax.Array  # lowest validation loss seen (inf before the first epoch)
    bad_epochs: jax.Array  # epochs since `best` last improved


def torch_plateau(
    factor: float,
    patience: int,
    learning_rate: float,
    threshold: float = 1e-4,
    min_lr_delta: float = 1e-8,
) -> optax.GradientTransformationExtraArgs:
    """torch's `ReduceLROnPlateau(mode='min', threshold_mode='rel', cooldown=0, min_lr=0)`.

    Written here because optax's `reduce_on_plateau` cuts when the count of bad epochs
    REACHES patience, torch when it EXCEEDS it (the paper's schedules are torch's). A loss is
    an improvement when it is below `best * (1 - threshold)`; each bad epoch counts, and the
    count above `patience` scales the rate by `factor` and starts counting again. torch also
    skips a cut that would change the rate by no more than its eps (1e-8), which only
    matters for tiny rates; `learning_rate` is the base rate it is measured against (exact for
    the constant schedule the paper used).

    Stepped once per epoch with `update(updates, state, value=val_loss)`.
    """

    def init_fn(params) -> PlateauState:
        del params
        return PlateauState(
            scale=jnp.asarray(1.0, jnp.float32),
            best=jnp.asarray(jnp.inf, jnp.float32),
            bad_epochs=jnp.asarray(0, jnp.int32),
        )

    def update_fn(updates, state: PlateauState, params=None, *, value, **extra):
        del params, extra
        value = jnp.asarray(value, jnp.float32)
        improved = value < state.best * (1.0 - threshold)
        best = jnp.where(improved, value, state.best)
        bad = jnp.where(improved, 0, state.bad_epochs + 1)
        lr = learning_rate * state.scale
        cut = (bad > patience) & (lr - lr * factor > min_lr_delta)
        scale = jnp.where(cut, state.scale * factor, state.scale)
        # torch resets the count whenever it exceeds patience, cut or not.
        bad = jnp.where(bad > patience, 0, bad)
        new = PlateauState(scale=scale.astype(jnp.float32), best=best, bad_epochs=bad)
        return jax.tree.map(lambda u: u * new.scale, updates), new

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def plateau(optim) -> optax.GradientTransformationExtraArgs | None:
    """The reduce-on-plateau scheduler named by `optim.plateau_rule`, or None when patience is 0.

    Raises:
      UserError: unknown rule.
    """
    if optim.plateau_patience <= 0:
        return None
    if optim.plateau_rule == "torch":
        return torch_plateau(
            optim.plateau_factor, optim.plateau_patience, learning_rate=optim.learning_rate
        )
    if optim.plateau_rule == "optax":
        # torch's defaults otherwise: relative threshold 1e-4, no cooldown.
        return optax.contrib.reduce_on_plateau(
            factor=optim.plateau_factor, patience=optim.plateau_patience, rtol=1e-4
        )
    raise UserError(
        f"config optim.plateau_rule={optim.plateau_rule!r}; choose one of {PLATEAU_RULES}"
    )


def default_config():
    """An `optim` block with every key set (stage configs copy and adjust it)."""
    import ml_collections

    return ml_collections.ConfigDict(
        dict(
            name="adam_l2",
            learning_rate=5e-5,
            weight_decay=0.0,
            b1=0.9,
            b2=0.999,
            eps=1e-8,
            schedule="constant",
            warmup_steps=0,
            warmup_ratio=0.0,
            clip_norm=0.0,
            accumulate_steps=1,
            plateau_patience=0,
            plateau_factor=0.1,
            plateau_rule="torch",
        )
    )
