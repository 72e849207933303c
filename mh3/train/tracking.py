"""Watching a run: metrics records (metrics.jsonl + TensorBoard), progress bars, log files.

- `Tracker` writes each record of the training loop to `<workdir>/metrics.jsonl` and its
  scalar values to TensorBoard event files in `<workdir>/tb/` as `<split>/<key>`, so the two
  always hold the same keys. On resume both drop what came after the restored step.
- `progress` is a tqdm bar on a terminal; when stderr is not a terminal (a log file, a CI
  pipe) it logs a plain line every 10% or minute instead, so the output has no carriage returns.
- `log_file` copies the process's log records to `<workdir>/log.txt` while a stage runs; a
  nested stage (the student's teachers) writes to its own file, and the outer one resumes after.
- `Pipeline` prints one line per step of a multi-stage pipeline, cached or run, with its time.

Only process 0 writes files (metrics, event files, logs). TensorBoard files are written with
the `tensorboard` package's own event writer (the one torch.utils.tensorboard uses): it needs
no TensorFlow, imports in well under a second, and the same package is the viewer (`tensorboard
--logdir runs`) and the reader the tests use. tensorboardX was the other candidate, but it
imports torch on import (seconds per training process on a small CPU machine).
"""

import contextlib
import json
import logging as pylogging
import numbers
import os
import sys
import time
from collections.abc import Callable

import optax
from absl import logging
from tqdm import tqdm

from mh3 import files
from mh3.train import parallel

TB_DIR = "tb"
LOG_FILE = "log.txt"
METRICS_FILE = "metrics.jsonl"
# Record keys that place a record rather than measure something.
PLACE_KEYS = ("step", "epoch", "split")


def scalars(record: dict) -> dict[str, float]:
    """The plain numbers of a record (`PLACE_KEYS`, None, lists and dicts left out)."""
    return {
        k: float(v)
        for k, v in record.items()
        if k not in PLACE_KEYS and isinstance(v, numbers.Real) and not isinstance(v, bool)
    }


class Tracker:
    """`metrics.jsonl` and TensorBoard event files of one training run (process 0 only)."""

    def __init__(self, workdir: str, resume_step: int, *, flush_secs: int = 15):
        """Opens the run's logs; with `resume_step > 0` drops what came after that step."""
        self.active = parallel.process_index() == 0
        self.path = os.path.join(workdir, METRICS_FILE)
        self._events = None
        if not self.active:
            return
        if os.path.exists(self.path):
            self._truncate(resume_step)
        # Lazy: only process 0 of a training stage pays for the import.
        from tensorboard.compat.proto import event_pb2, summary_pb2
        from tensorboard.summary.writer.event_file_writer import EventFileWriter

        self._pb = (event_pb2, summary_pb2)
        self._events = EventFileWriter(os.path.join(workdir, TB_DIR), flush_secs=flush_secs)
        if resume_step > 0:
            # TensorBoard's own resume marker: a SessionLog START at step s makes readers drop
            # the earlier files' events from step s on (they are replayed by this run).
            self._events.add_event(
                event_pb2.Event(
                    wall_time=time.time(),
                    step=resume_step + 1,
                    session_log=event_pb2.SessionLog(status=event_pb2.SessionLog.START),
                )
            )

    def _truncate(self, resume_step: int) -> None:
        kept = []
        with open(self.path) as f:
            for number, line in enumerate(f, start=1):
                try:
                    record = json.loads(line)
                except ValueError:
                    # A line cut short by a kill or a full disk: drop it, keep the rest.
                    if line.strip():
                        logging.warning("%s line %d is damaged; dropped", self.path, number)
                    continue
                if record["step"] <= resume_step:
                    kept.append(json.dumps(record) + "\n")
        files.atomic_write(self.path, lambda tmp: open(tmp, "w").writelines(kept))

    def write(self, record: dict) -> None:
        """Appends `record` (with `step` and `split`) to metrics.jsonl and its scalars to
        TensorBoard as `<split>/<key>` at `step`."""
        if not self.active:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        event_pb2, summary_pb2 = self._pb
        values = [
            summary_pb2.Summary.Value(tag=f"{record['split']}/{k}", simple_value=v)
            for k, v in scalars(record).items()
        ]
        self._events.add_event(
            event_pb2.Event(
                wall_time=time.time(),
                step=record["step"],
                summary=summary_pb2.Summary(value=values),
            )
        )

    def close(self) -> None:
        if self._events is not None:
            self._events.close()
            self._events = None


def step_rate(schedule: optax.Schedule, accumulate_steps: int) -> Callable[[int], float]:
    """Step -> the rate of the optimizer update that step makes (the plateau scale not
    included: the loop multiplies it in, it lives in the state).

    With gradient accumulation, steps (k-1)*every+1 .. k*every make update k (count k-1).
    """
    every = max(int(accumulate_steps), 1)
    return lambda step: float(schedule(max(step - 1, 0) // every))


class _Lines:
    """tqdm's interface as plain log lines: one every 10% of `total` or every `every_s`
    seconds, whichever comes first (never twice within `min_s`), and one at the end."""

    def __init__(self, total, initial, desc, unit, every_s=60.0, min_s=5.0):
        self.total, self.n, self.desc, self.unit = total, initial, desc, unit
        self.every_s, self.min_s = every_s, min_s
        self.start = self.last = time.monotonic()
        self.start_n = self.last_n = initial
        self.postfix = ""

    def _line(self) -> None:
        now = time.monotonic()
        rate = (self.n - self.start_n) / max(now - self.start, 1e-9)
        done = f"{self.n}/{self.total}" if self.total else f"{self.n}"
        pct = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
        post = f" {self.postfix}" if self.postfix else ""
        logging.info(
            "%s: %s %s%s, %.1f %s/s, %.0f s%s",
            self.desc, done, self.unit, pct, rate, self.unit, now - self.start, post,
        )  # fmt: skip
        self.last, self.last_n = now, self.n

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self.last < self.min_s:
            return
        tenth = self.total and self.n * 10 // self.total > self.last_n * 10 // self.total
        if tenth or now - self.last >= self.every_s:
            self._line()

    def set_postfix(self, **values) -> None:
        self.postfix = " ".join(f"{k}={v}" for k, v in values.items())

    def close(self) -> None:
        if self.n != self.last_n:
            self._line()


def progress(total: int | None, desc: str, unit: str, initial: int = 0):
    """A progress bar with tqdm's `update`/`set_postfix`/`close`: tqdm when stderr is a
    terminal, else plain log lines (no carriage returns). Silent on processes other than 0."""
    if parallel.process_index() != 0:
        return tqdm(total=total, disable=True)
    if sys.stderr.isatty():
        return tqdm(total=total, initial=initial, desc=desc, unit=unit, dynamic_ncols=True)
    return _Lines(total, initial, desc, unit)


class QuietOrbax(pylogging.Filter):
    """Drops Orbax's INFO records and its errors' tracebacks (dozens on a full disk)."""

    def filter(self, record: pylogging.LogRecord) -> bool:
        if "/orbax/" not in record.pathname:
            return True
        record.exc_info = record.exc_text = None
        return record.levelno >= pylogging.WARNING


def quiet_orbax() -> None:
    """Keeps stderr readable: Orbax's INFO records and tracebacks off the absl handler, and the
    `Event loop is closed` errors that tensorstore's callbacks raise after a failed save (on a
    full or read-only disk Orbax closes its event loop while writes are still completing; the
    interpreter prints each one, dozens of tracebacks, through sys.excepthook or, when a C++
    thread's callback fails, through sys.unraisablehook with no object named)."""
    logging.get_absl_handler().addFilter(QuietOrbax())

    def closed_loop(kind, value) -> bool:
        return kind is RuntimeError and str(value) == "Event loop is closed"

    previous, previous_unraisable = sys.excepthook, sys.unraisablehook

    def hook(kind, value, tb):
        if not closed_loop(kind, value):
            previous(kind, value, tb)

    def unraisable(info):
        if not closed_loop(info.exc_type, info.exc_value):
            previous_unraisable(info)

    sys.excepthook, sys.unraisablehook = hook, unraisable


# The open log files, innermost stage last; only the last one receives records.
_LOG_STACK: list[pylogging.Handler] = []


@contextlib.contextmanager
def log_file(workdir: str, header: str = ""):
    """Within the block, this process's log records (absl's and every Python logger's, at the
    level the process logs at) are appended to `<workdir>/log.txt` (process 0 only), after
    `header`, a line for the file alone (stderr stays for what the user must read).

    Nested blocks each write their own file; the outer one pauses and resumes afterwards.
    """
    if parallel.process_index() != 0:
        yield
        return
    handler = pylogging.FileHandler(os.path.join(workdir, LOG_FILE), encoding="utf-8")
    handler.setFormatter(
        pylogging.Formatter(
            "%(asctime)s %(levelname).1s %(module)s:%(lineno)d] %(message)s", "%Y-%m-%d %H:%M:%S"
        )
    )
    handler.addFilter(QuietOrbax())
    if header:
        handler.handle(pylogging.makeLogRecord({"msg": header, "levelno": pylogging.INFO,
                                                "levelname": "INFO", "module": "mh3"}))  # fmt: skip
    root = pylogging.getLogger()
    if _LOG_STACK:
        root.removeHandler(_LOG_STACK[-1])
    _LOG_STACK.append(handler)
    root.addHandler(handler)
    try:
        yield
    finally:
        root.removeHandler(handler)
        handler.close()
        _LOG_STACK.pop()
        if _LOG_STACK:
            root.addHandler(_LOG_STACK[-1])


class Pipeline:
    """One line per step of a pipeline on stdout (and in the log): `student stage 3/7 teacher
    audio: cached (0.2 s)`, or `...: running` when its work starts and `...: done in 93.1 s`."""

    def __init__(self, total: int, name: str):
        self.total, self.name, self.count = total, name, 0

    @contextlib.contextmanager
    def stage(self, label: str):
        """Runs the block as the next step. Call `running()` on what it yields when the step
        has real work to do (not only a result to read); a step that never does is `cached`."""
        self.count += 1
        step = _Step(f"{self.name} stage {self.count}/{self.total} {label}")
        yield step
        took = time.perf_counter() - step.start
        step.say(f"done in {took:.1f} s" if step.ran else f"cached ({took:.1f} s)")


class _Step:
    def __init__(self, head: str):
        self.head, self.ran, self.start = head, False, time.perf_counter()

    def say(self, what: str) -> None:
        if parallel.process_index() != 0:
            return
        print(f"{self.head}: {what}", flush=True)
        # Into the log file too, but not through the loggers: stderr would repeat the line.
        if _LOG_STACK:
            record = pylogging.LogRecord("mh3", pylogging.INFO, "pipeline", 0, "", None, None)
            record.msg = f"{self.head}: {what}"
            _LOG_STACK[-1].handle(record)

    def running(self) -> None:
        if not self.ran:
            self.ran = True
            self.say("running")
