"""Runs one mh3 stage: `python launch.py --config=configs/<stage>.py[:k=v,...] [--workdir=DIR]`.

The config names the stage (`config.stage`); see configs/ and README.md. A mistake a user can
make (unknown config key, bad path, bad column) ends in one line on stderr and exit code 2.
"""

import os
import sys
from importlib.util import find_spec

from absl import app, flags, logging
from ml_collections import config_flags

from mh3 import stages
from mh3.errors import UserError, disk_fault
from mh3.train import tracking

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Stage config file, e.g. configs/student.py:dataset=sdcnl", lock_config=True
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Output folder (default runs/<stage>[-<dataset>]).")
_OVERRIDES = flags.DEFINE_string(
    "overrides", None, 'JSON {"block.key": value} set on the config last, e.g. best_params.json'
)
# Multi-host (one process per host): all three, or none (one host / cluster autodetect).
_COORD = flags.DEFINE_string("coordinator_address", None, "host:port of process 0.")
_NPROC = flags.DEFINE_integer("num_processes", None, "Number of processes.")
_PID = flags.DEFINE_integer("process_id", None, "This process's index.")
_CACHE = flags.DEFINE_string(
    "compilation_cache", None,
    "Folder of XLA's persistent compilation cache; '' turns it off. Default: "
    "$JAX_COMPILATION_CACHE_DIR, else $XDG_CACHE_HOME/mh3/xla (~/.cache/mh3/xla).",
)  # fmt: skip
flags.mark_flag_as_required("config")
# The cache's size limit: least recently used programs are dropped beyond it. The demo's 26
# programs take 3 MB (a MiniLM train step 0.75 MB), so this holds those of many pipelines.
CACHE_MAX_BYTES = 2 << 30


def _fail(message: str, *, at_once: bool = False) -> None:
    print(f"error: {message}", file=sys.stderr)
    if at_once:
        # A disk fault: Orbax's failed writer threads would print tracebacks at interpreter
        # exit, burying this line. Everything finished is already on disk (atomic writes).
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(2)
    sys.exit(2)


def _parse_flags(argv):
    # absl prints its usage and exits 1, ml_collections raises on a misspelt --config.key.
    try:
        return flags.FLAGS(argv)
    except (flags.Error, UserError, KeyError, AttributeError, TypeError, ValueError) as e:
        text = " ".join(str(e).replace("\\n", " ").replace("\\'", "").split()).strip("'\" ")
        what = "unknown config key" if isinstance(e, (KeyError, AttributeError)) else "bad flag"
        _fail(f"{what}: {text}")


def _compilation_cache(folder: str | None) -> None:
    """Keeps each compiled program on disk, so a process that builds the same step again reads
    it back instead of compiling it (6-10 s for a MiniLM train step on 2 cores): a rerun with a
    changed config, each of `runs` students after the first, search trials, and within one
    pipeline the student's evaluation and head init, which equal its text teacher's. JAX keys
    each entry by the program, the XLA flags and the jax/jaxlib versions. Only programs that
    took at least `jax_persistent_cache_min_compile_time_secs` (1 s) are kept, and only
    process 0 writes. The cache is an optimisation, so a folder that cannot be written is one
    warning and no cache, never a failed run."""
    import jax

    own = False  # mh3's default folder, which only mh3 writes
    if folder is None:
        folder = jax.config.jax_compilation_cache_dir
        if not folder:
            home = os.path.join(os.path.expanduser("~"), ".cache")
            folder, own = os.path.join(os.environ.get("XDG_CACHE_HOME") or home, "mh3", "xla"), True
    if folder:
        folder = os.path.abspath(os.path.expanduser(folder))
        try:
            os.makedirs(folder, exist_ok=True)
            writable = os.access(folder, os.W_OK | os.X_OK)
        except OSError:
            writable = False
        if not writable:
            logging.warning("compilation cache %s cannot be written; running without it "
                            "(choose another with --compilation_cache=DIR)", folder)  # fmt: skip
            folder = None
    jax.config.update("jax_compilation_cache_dir", folder or None)
    # The size limit only on mh3's own folder: with a limit JAX needs a last-use file beside each
    # entry, and a folder it filled without one (any JAX_COMPILATION_CACHE_DIR) would make every
    # write fail. JAX locks the folder with `filelock` (a dependency of transformers' hub client).
    if own and folder and jax.config.jax_compilation_cache_max_size == -1 and find_spec("filelock"):
        jax.config.update("jax_compilation_cache_max_size", CACHE_MAX_BYTES)


def main(argv):
    # Orbax's INFO records and failed-save tracebacks stay out of stderr (and log.txt).
    tracking.quiet_orbax()
    if len(argv) > 1:
        _fail(f"unexpected arguments {argv[1:]}; pass options as --config.key=value")
    try:
        config = _CONFIG.value
        config.stage  # noqa: B018 -- a config file that failed to load raises only on access
    except OSError as e:
        name = config_flags.get_config_filename(flags.FLAGS["config"])
        _fail(f"cannot load config file {name}: {str(e).splitlines()[-1].strip()}")
    try:
        from mh3.train import parallel

        if _OVERRIDES.value:
            stages.apply_overrides_file(config, _OVERRIDES.value)
        parallel.initialize(_COORD.value, _NPROC.value, _PID.value)
        _compilation_cache(_CACHE.value)
        results = stages.run_stage(config, _WORKDIR.value)
    except UserError as e:
        _fail(str(e))
    except OSError as e:
        _fail(disk_fault(e), at_once=True)
    logging.info("results: %s/results.json", results["workdir"])
    print(f"results: {results['workdir']}/results.json")


if __name__ == "__main__":
    app.run(main, flags_parser=_parse_flags)
