"""Orbax checkpoints of a training run: the state, the loop's bookkeeping, the best params.

One `CheckpointManager` per run in `<workdir>/checkpoints/`. Each checkpoint is a Composite of
`state` (step, params, opt_state, rng, plateau; StandardSave), `loop` (epoch counters and
validation history; JSON) and, when the run keeps its best-validation model, `best` (those
params). Restore targets are built with `jax.eval_shape` from a freshly initialised state, so
restoring never allocates twice and a shape mismatch fails loudly.
"""

import os

import jax
import numpy as np
import orbax.checkpoint as ocp

from mh3.train import state as state_lib


class Checkpoints:
    """Saves and restores host copies of a TrainState (see module docstring)."""

    def __init__(self, workdir: str, *, max_to_keep: int, keep_best: bool):
        self.directory = os.path.abspath(os.path.join(workdir, "checkpoints"))
        self.keep_best = keep_best
        self._manager = ocp.CheckpointManager(
            self.directory, options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep)
        )

    def latest_step(self) -> int | None:
        """The step of the newest finished checkpoint, or None."""
        return self._manager.latest_step()

    def save(self, step: int, host_state: state_lib.TrainState, loop: dict, best=None) -> None:
        """Writes a checkpoint at `step` (asynchronously; `wait` or `close` to finish)."""
        items = {
            "state": ocp.args.StandardSave(state_lib.checkpoint_tree(host_state)),
            "loop": ocp.args.JsonSave(loop),
        }
        if self.keep_best:
            items["best"] = ocp.args.StandardSave(best if best is not None else host_state.params)
        self._manager.save(step, args=ocp.args.Composite(**items), force=True)

    def restore(self, template: state_lib.TrainState) -> tuple[state_lib.TrainState, dict, object]:
        """The latest checkpoint as (host state, loop dict, best params or None).

        Args:
          template: a host state of the right shapes (its values are not used).
        """
        tree = state_lib.checkpoint_tree(template)
        abstract = jax.eval_shape(lambda: tree)
        items = {"state": ocp.args.StandardRestore(abstract), "loop": ocp.args.JsonRestore()}
        if self.keep_best:
            items["best"] = ocp.args.StandardRestore(jax.eval_shape(lambda: template.params))
        step = self._manager.latest_step()
        restored = self._manager.restore(step, args=ocp.args.Composite(**items))
        # Orbax hands namedtuples (optimizer states) back as plain tuples: rebuild the exact
        # tree structure from the template.
        leaves = [np.asarray(x) for x in jax.tree.leaves(restored["state"])]
        tree = jax.tree.unflatten(jax.tree.structure(tree), leaves)
        best = None
        if self.keep_best:
            best_leaves = [np.asarray(x) for x in jax.tree.leaves(restored["best"])]
            best = jax.tree.unflatten(jax.tree.structure(template.params), best_leaves)
        return state_lib.from_checkpoint_tree(template, tree), dict(restored["loop"]), best

    def wait(self) -> None:
        """Blocks until pending asynchronous saves are on disk."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        """Finishes pending saves and releases the manager."""
        self._manager.wait_until_finished()
        self._manager.close()
