"""Orbax checkpoints of a training run: the state, the loop's bookkeeping, the best params.

One `CheckpointManager` per run in `<workdir>/checkpoints/`. Each checkpoint is a Composite of
`state` (step, params, opt_state, rng, plateau; StandardSave), `loop` (epoch counters and
validation history; JSON) and, when the run keeps its best-validation model, `best` (those
params). Restore targets are built with `jax.eval_shape` from a freshly initialised state, so
restoring never allocates twice and a shape mismatch fails loudly.

Checkpoints are bound to the run that made them. `checkpoints/mh3_run.json` records the run's
fingerprint: the resolved config minus the keys that cannot change the trained parameters
(`NOT_TRAINING`), plus whatever else the caller names as input (e.g. a digest of the student's
teacher logits). A rerun with another fingerprint never resumes from them: it starts fresh,
after moving the old folder to `checkpoints.superseded/` (one generation is kept, so a mistyped
flag loses nothing; the next change replaces it) and logging one warning that names the keys
that differ. Resuming silently would give old parameters under the new config's name, and
refusing would stop the student pipeline, whose teacher workdirs are reused across configs.
"""

import contextlib
import hashlib
import json
import os
import re
import shutil

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging

from mh3 import files
from mh3.train import parallel
from mh3.train import state as state_lib

BINDING = "mh3_run.json"
SUPERSEDED = "checkpoints.superseded"
# Dotted config keys that only decide how a run is logged or saved, never what it computes.
NOT_TRAINING = (
    "train.log_every_steps", "train.checkpoint_every_steps", "train.checkpoint_min_secs",
    "train.max_to_keep",
    "tts.workers",  # speech is byte-identical with any number of worker processes
    "speech_in_background",  # the student's: where that speech is made, not what
)  # fmt: skip


def _training(key: str) -> bool:
    # By key ending, so a nested stage block (the student's `teacher_text.train...`, the audio
    # teacher's `tts.tts.workers`) is treated as the stage's own.
    return not any(key == k or key.endswith("." + k) for k in NOT_TRAINING)


def flatten(tree, prefix: str = "") -> dict:
    """A nested dict (e.g. `config.to_dict()`) as {dotted.key: leaf value}."""
    if not isinstance(tree, dict):
        return {prefix: tree}
    out = {}
    for key, value in tree.items():
        out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def fingerprint(config, **inputs) -> dict:
    """What a checkpoint is bound to: the flat config without NOT_TRAINING keys, plus `inputs`.

    Args:
      config: the run's ConfigDict (or a plain nested dict).
      **inputs: other things the run's result depends on, as JSON values (e.g. digests).
    """
    tree = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    flat = {k: v for k, v in flatten(tree).items() if _training(k)}
    flat.update(flatten(inputs, "inputs"))
    # Round-trip through JSON so tuples and lists compare equal with what is read back.
    return json.loads(json.dumps(flat, sort_keys=True, default=str))


def fingerprint_hash(fp: dict) -> str:
    """A short stable digest of a `fingerprint`."""
    return hashlib.sha256(json.dumps(fp, sort_keys=True).encode()).hexdigest()[:16]


def differences(old: dict, new: dict, limit: int = 6) -> str:
    """`key old -> new` for each key whose value differs, e.g. `seed 0 -> 7`."""
    keys = sorted(
        k for k in old.keys() | new.keys() if old.get(k, "<unset>") != new.get(k, "<unset>")
    )
    parts = [f"{k} {old.get(k, '<unset>')!r} -> {new.get(k, '<unset>')!r}" for k in keys[:limit]]
    if len(keys) > limit:
        parts.append(f"and {len(keys) - limit} more")
    return ", ".join(parts)


@contextlib.contextmanager
def _os_errors(directory: str):
    """Turns TensorStore's file-system failures inside Orbax (a full disk, a read-only file
    system: ValueErrors carrying `os_error_code='N'`) back into the OSError they are, so the
    launcher reports them in one line like any other disk fault."""
    try:
        yield
    except (ValueError, RuntimeError) as e:
        code = re.search(r"os_error_code='?(\d+)", str(e))
        if code is None:
            raise
        number = int(code.group(1))
        raise OSError(number, os.strerror(number), directory) from e


def _bind(directory: str, fp: dict) -> None:
    """Makes `directory` hold only checkpoints of the run `fp` describes (module docstring)."""
    record = os.path.join(directory, BINDING)
    if os.path.isdir(directory) and os.listdir(directory):
        try:
            old = files.read_json(record)["fingerprint"]
        except (OSError, ValueError, KeyError, TypeError):
            old = None
        if old == fp:
            return
        why = (
            f"the config changed: {differences(old, fp)}"
            if old is not None
            else "they carry no record of the config that made them (older mh3)"
        )
        stash = os.path.join(os.path.dirname(directory), SUPERSEDED)
        shutil.rmtree(stash, ignore_errors=True)
        os.replace(directory, stash)
        logging.warning(
            "not resuming from the checkpoints in %s: %s; starting fresh (old ones moved to %s)",
            directory, why, stash,
        )  # fmt: skip
    files.write_json(record, {"fingerprint_hash": fingerprint_hash(fp), "fingerprint": fp})


class Checkpoints:
    """Saves and restores host copies of a TrainState (see module docstring)."""

    def __init__(self, workdir: str, *, max_to_keep: int, keep_best: bool, fp: dict | None = None):
        """Opens `<workdir>/checkpoints`.

        Args:
          fp: the run's `fingerprint`; checkpoints of any other run are moved aside first.
            None opens the folder as it is (to read a checkpoint back, not to train).
        """
        self.directory = os.path.abspath(os.path.join(workdir, "checkpoints"))
        self.keep_best = keep_best
        if fp is not None:
            if parallel.process_index() == 0:
                _bind(self.directory, fp)
            parallel.sync("mh3-checkpoints-bound")
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
        with _os_errors(self.directory):
            self._manager.save(step, args=ocp.args.Composite(**items), force=True)

    def restore(self, template: state_lib.TrainState) -> tuple[state_lib.TrainState, dict, object]:
        """The newest checkpoint that reads back, as (host state, loop dict, best params or None).

        A damaged newest checkpoint (a kill or a full disk mid-write) is skipped with a warning
        and the one before it is used; when none reads back the run starts from `template`.

        Args:
          template: a host state of the right shapes (its values are not used).
        """
        for step in sorted(self._manager.all_steps(), reverse=True):
            try:
                return self._restore(step, template)
            except Exception as e:  # noqa: BLE001 - Orbax and TensorStore raise many kinds
                reason = " ".join(str(e).split())[:200]
                logging.warning(
                    "checkpoint at step %d in %s does not read back (%s); removed it, trying "
                    "an older one", step, self.directory, reason,
                )  # fmt: skip
                # Removed so that the resumed run can save that step again.
                self._manager.delete(step)
        logging.warning("no checkpoint in %s reads back; starting from scratch", self.directory)
        return template, None, None

    def _restore(self, step: int, template: state_lib.TrainState):
        tree = state_lib.checkpoint_tree(template)
        abstract = jax.eval_shape(lambda: tree)
        items = {"state": ocp.args.StandardRestore(abstract), "loop": ocp.args.JsonRestore()}
        if self.keep_best:
            items["best"] = ocp.args.StandardRestore(jax.eval_shape(lambda: template.params))
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
        with _os_errors(self.directory):
            self._manager.wait_until_finished()

    def close(self) -> None:
        """Finishes pending saves and releases the manager."""
        with _os_errors(self.directory):
            self._manager.wait_until_finished()
            self._manager.close()
