"""Runs one mh3 stage: `python launch.py --config=configs/<stage>.py[:k=v,...] [--workdir=DIR]`.

The config names the stage (`config.stage`); see configs/ and README.md. A mistake a user can
make (unknown config key, bad path, bad column) ends in one line on stderr and exit code 2.
"""

import os
import sys

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
flags.mark_flag_as_required("config")


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
        results = stages.run_stage(config, _WORKDIR.value)
    except UserError as e:
        _fail(str(e))
    except OSError as e:
        _fail(disk_fault(e), at_once=True)
    logging.info("results: %s/results.json", results["workdir"])
    print(f"results: {results['workdir']}/results.json")


if __name__ == "__main__":
    app.run(main, flags_parser=_parse_flags)
