"""The stage registry and the one way every stage is run.

A stage is a module with `run(config, workdir) -> dict` that does one arrow of the data flow
in DESIGN.md. `run_stage` wraps it: it writes `config.json`, skips the stage when `results.json`
in the workdir was written for the same config (so a rerun after a kill resumes where it was,
and a pipeline never repeats finished work), and writes `results.json` atomically at the end.
"""

import contextlib
import errno
import fcntl
import hashlib
import importlib
import json
import os
import socket
import tempfile
import time

import jax
from absl import logging

from mh3 import files, validate
from mh3.errors import UserError
from mh3.train import parallel, tracking

# Stage name -> module. Modules are imported only when their stage runs, so a stage's heavy
# dependencies (torch for Bark, piper for speech) never slow down the others.
STAGES = {
    "describe": "mh3.stages.describe",
    "teacher_text": "mh3.stages.teacher_text",
    "tts": "mh3.stages.tts",
    "data": "mh3.stages.data",
    "emotion_embeddings": "mh3.stages.emotion_embeddings",
    "teacher_emotion": "mh3.stages.teacher_emotion",
    "teacher_audio": "mh3.stages.teacher_audio",
    "student": "mh3.stages.student",
    "predict": "mh3.stages.predict",
    "evaluate": "mh3.stages.evaluate",
    "search": "mh3.stages.search",
    "compare": "mh3.stages.compare",
}


def config_hash(config) -> str:
    """A stable fingerprint of a resolved config (its JSON with sorted keys)."""
    text = json.dumps(config.to_dict(), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def prng_impl(config) -> str:
    """`config.train.prng_impl` when the stage trains with one set, else jax's threefry."""
    if "train" in config and "prng_impl" in config.train:
        return config.train.prng_impl
    return "threefry2x32"


def default_workdir(config) -> str:
    """`runs/<stage>[-<dataset>]`, the DESIGN.md default."""
    name = config.stage
    if "dataset" in config and config.dataset:
        name += f"-{config.dataset}"
    return os.path.join("runs", name)


def is_done(config, workdir: str) -> bool:
    """True when `workdir` holds results written for exactly this config."""
    path = os.path.join(workdir, "results.json")
    if not os.path.exists(path):
        return False
    try:
        return files.read_json(path).get("config_hash") == config_hash(config)
    except (OSError, ValueError):
        return False


def apply_overrides(config, overrides: dict, *, source: str = "overrides") -> None:
    """Sets flat `{"block.key": value}` overrides on a resolved config, in place.

    The one way values found elsewhere reach any stage's config: a search's best_params.json
    (`launch.py --overrides=FILE`) and each search trial's sampled values. JSON lists become
    tuples where the config holds a tuple.

    Raises:
      UserError: a key the config does not have, or a value of the wrong type, naming `source`.
    """
    for dotted, value in overrides.items():
        *path, leaf = dotted.split(".")
        node = config
        try:
            for name in path:
                node = node[name]
            if leaf not in node:
                raise KeyError(leaf)
            if isinstance(node[leaf], tuple) and isinstance(value, list):
                value = tuple(value)
            node[leaf] = value
        except (KeyError, TypeError, AttributeError) as e:
            raise UserError(
                f"{source}: cannot set config key {dotted!r} to {value!r} for stage "
                f"{config.stage} ({type(e).__name__}: {e})"
            ) from None


def apply_overrides_file(config, path: str) -> None:
    """`apply_overrides` with the JSON object in `path` (e.g. a search's best_params.json).

    Raises:
      UserError: the file is missing, is not a JSON object, or names a key the config lacks.
    """
    try:
        overrides = files.read_json(path)
    except (OSError, ValueError) as e:
        raise UserError(f"--overrides={path}: cannot read a JSON object ({e})") from None
    if not isinstance(overrides, dict):
        raise UserError(f"--overrides={path}: expected a JSON object of 'block.key': value")
    apply_overrides(config, overrides, source=path)


def run_stage(config, workdir: str | None = None, *, force: bool = False) -> dict:
    """Runs `config.stage` in `workdir` unless it is already done for this config.

    Args:
      config: a resolved ConfigDict from one of the files in configs/.
      workdir: output folder; defaults to `default_workdir(config)`.
      force: run even when finished results for the same config exist.

    Returns:
      The stage's results dict (also in `<workdir>/results.json`), with `workdir` set.
    """
    if config.stage not in STAGES:
        raise UserError(
            f"unknown stage {config.stage!r} in the config; known stages: {', '.join(sorted(STAGES))}"
        )
    validate.check(config)
    workdir = workdir or default_workdir(config)
    results_path = os.path.join(workdir, "results.json")
    # In a multi-host run every process follows process 0's view of the workdir, and only
    # process 0 writes there (mh3.files skips the writes of the others; the lock is its own).
    if parallel.agree(not force and is_done(config, workdir)):
        logging.info("stage %s already done in %s; skipping", config.stage, workdir)
        return files.read_json(results_path)
    if parallel.process_index() == 0:
        check_writable(workdir)
    parallel.sync(f"mh3-workdir-ready:{workdir}")
    with workdir_lock(workdir):
        config_path = os.path.join(workdir, "config.json")
        before = open(config_path, "rb").read() if os.path.exists(config_path) else None
        files.write_json(config_path, config.to_dict())
        module = importlib.import_module(STAGES[config.stage])
        # The PRNG behind dropout keys is a process-wide jax setting. Each stage runs under the
        # one its config names (default threefry), and the caller's is restored afterwards, so
        # a stage gives the same result whether or not another stage ran before it.
        previous = jax.config.jax_default_prng_impl
        jax.config.update("jax_default_prng_impl", prng_impl(config))
        try:
            # `<workdir>/log.txt`: this stage's log records (a nested stage writes its own).
            header = f"stage {config.stage} in {workdir} (process {os.getpid()})"
            with tracking.log_file(workdir, header):
                results = module.run(config, workdir)
        except BaseException:
            # A failed command leaves the workdir's record as it was: config.json goes on
            # describing the results (and checkpoints) already there.
            if before is not None:
                files.atomic_write(config_path, lambda tmp: open(tmp, "wb").write(before))
            raise
        finally:
            jax.config.update("jax_default_prng_impl", previous)
        results = {"stage": config.stage, "config_hash": config_hash(config), **results}
        results["workdir"] = workdir
        files.write_json(results_path, results)
    return results


LOCK = ".mh3.lock"


def check_writable(workdir: str) -> None:
    """Creates `workdir` and proves a file can be written there, before any work starts.

    Raises:
      UserError: one line naming the workdir and why (a file in the way, no permission, a
        read-only or full file system).
    """
    try:
        if os.path.exists(workdir) and not os.path.isdir(workdir):
            raise NotADirectoryError(errno.ENOTDIR, "it is a file, not a folder", workdir)
        os.makedirs(workdir, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=workdir, prefix=".write-test-"):
            pass
    except OSError as e:
        raise UserError(
            f"workdir {workdir} cannot be written ({e.strerror or e}); pass another --workdir"
        ) from None


@contextlib.contextmanager
def workdir_lock(workdir: str):
    """Holds `<workdir>/.mh3.lock` (an exclusive flock) while a stage runs there.

    A second run on the same workdir ends at once with one line naming the process that holds
    it. The operating system drops the lock when its process dies, so a lock left by a killed
    run never blocks. In a multi-host run only process 0 takes it (all share the workdir).
    """
    if parallel.process_index() != 0:
        yield
        return
    path = os.path.join(workdir, LOCK)
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            raise UserError(
                f"workdir {workdir} is in use by {holder}; wait for it to finish, or pass "
                "another --workdir"
            ) from None
        f.seek(0)
        f.truncate()
        f.write(f"process {os.getpid()} on {socket.gethostname()} since {time.ctime()}\n")
        f.flush()
        try:
            yield
        finally:
            f.truncate(0)
            fcntl.flock(f, fcntl.LOCK_UN)
