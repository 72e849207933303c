"""The training state: flax's TrainState plus the run's random key and the plateau scheduler.

`rng` is the root key of the run; each step derives its dropout key from it and the step
number, so a resumed run replays the same keys. `plateau` is the state of the reduce-on-plateau
scheduler of mh3.train.optim.plateau (or None): it is stepped on the host with the validation loss
once per epoch and its `scale` multiplies the optimizer's updates, which for Adam-family
optimizers equals scaling the learning rate, as torch's `ReduceLROnPlateau` does.
"""

from typing import Any

import jax
import optax
from flax import struct
from flax.training import train_state


class TrainState(train_state.TrainState):
    """flax TrainState with `rng` (root key) and `plateau` (reduce-on-plateau state or None)."""

    rng: jax.Array
    plateau: Any = None
    plateau_tx: optax.GradientTransformationExtraArgs | None = struct.field(
        pytree_node=False, default=None
    )


def create(
    apply_fn,
    params,
    tx: optax.GradientTransformation,
    rng: jax.Array,
    plateau_tx: optax.GradientTransformationExtraArgs | None = None,
) -> TrainState:
    """A fresh state at step 0.

    Args:
      apply_fn: the model's apply function.
      params: initial parameters.
      tx: the optimizer (see mh3.train.optim.make).
      rng: root key of the run (dropout keys derive from it).
      plateau_tx: `mh3.train.optim.plateau(...)`, or None for no plateau schedule.
    """
    plateau = plateau_tx.init(params) if plateau_tx is not None else None
    return TrainState.create(
        apply_fn=apply_fn, params=params, tx=tx, rng=rng, plateau=plateau, plateau_tx=plateau_tx
    )


def step_plateau(state: TrainState, val_loss: float) -> TrainState:
    """Feeds one validation loss to the plateau scheduler (host side, once per epoch)."""
    if state.plateau_tx is None:
        return state
    _, plateau = state.plateau_tx.update({}, state.plateau, value=val_loss)
    return state.replace(plateau=plateau)


def checkpoint_tree(state: TrainState) -> dict:
    """The part of the state that is saved: arrays only, no functions."""
    return {
        "step": state.step,
        "params": state.params,
        "opt_state": state.opt_state,
        "rng": state.rng,
        "plateau": state.plateau,
    }


def from_checkpoint_tree(state: TrainState, tree: dict) -> TrainState:
    """`state` with the arrays of a restored `checkpoint_tree`."""
    return state.replace(**tree)
