"""The `tts` stage: every example's preprocessed text spoken into `wavs/Sample_{i}.wav`.

Thin: the dataset comes from mh3.data (global order, preprocessed text), the backend and the
resumable writer from mh3.audio.tts. Resuming is per file, so a killed run keeps what it made.

`Background` runs the stage in a child process at idle CPU priority (the student starts it
before its text and emotion teachers train, and waits for it before the audio teacher).
"""

import multiprocessing
import os
import sys

from absl import logging

from mh3 import data, stages
from mh3.audio import tts


def run(config, workdir: str) -> dict:
    workers = tts.resolve_workers(config.tts.workers)  # a bad count fails before any work
    ds = data.load_dataset(config.data)
    examples = ds.examples
    if config.tts.max_examples:
        examples = examples[: config.tts.max_examples]
    backend = tts.make_backend(config.tts)
    out_dir = os.path.join(workdir, "wavs")
    made = tts.write_wavs(
        [(e.index, e.text) for e in examples],
        out_dir,
        backend,
        seed=config.seed,
        max_words=config.tts.max_words,
        pause_s=config.tts.pause_s,
        workers=workers,
    )
    return {
        "data": ds.summary(),
        "data_fingerprint": ds.fingerprint,
        "synthetic_data": ds.synthetic,
        "wav_dir": out_dir,
        "backend": backend.name,
        "sample_rate": backend.sample_rate,
        # piper's wavs are checked byte for byte (tests/test_tts.py); bark seeds torch per
        # piece but is not checked that way
        "deterministic": backend.name == "piper",
        **made,
    }


class Background:
    """The tts stage in a child process at idle CPU priority (Linux SCHED_IDLE, else nice 19).

    Speech then runs only on cores the caller's own work leaves idle (startup, tracing, compiles
    that use one core, Python between steps), so it takes little from that work, and whatever
    it has made when `wait` is called is made. It only saves time: the caller still runs the stage
    itself afterwards, which keeps every file already there and makes the rest, or reports the
    stage's errors in its own process. The child's output goes to `<workdir>/background.log`.
    """

    def __init__(self, config, workdir: str, force: bool):
        os.makedirs(workdir, exist_ok=True)
        self.log = os.path.join(workdir, "background.log")
        # spawn: the caller holds JAX's threads, which fork would copy in an undefined state.
        context = multiprocessing.get_context("spawn")
        self._process = context.Process(
            target=_run_idle, args=(config, workdir, force, self.log), name="mh3-tts-background"
        )
        self._process.start()
        logging.info(
            "tts stage started in the background at idle priority (pid %d, log %s)",
            self._process.pid, self.log,
        )  # fmt: skip

    @property
    def pid(self) -> int:
        return self._process.pid

    @property
    def running(self) -> bool:
        return self._process.is_alive()

    def wait(self) -> int:
        """Waits for the child to finish (it then holds no lock on the workdir); its exit code."""
        if self._process.exitcode is None:
            self._process.join()
            logging.info("background tts stage ended (exit code %s)", self._process.exitcode)
        return self._process.exitcode

    def stop(self) -> None:
        """Ends a child still running (the caller failed or was interrupted); its speech workers
        notice their parent is gone and leave within a second."""
        if self._process.is_alive():
            self._process.terminate()
        self._process.join()


def _run_idle(config, workdir: str, force: bool, log: str) -> None:
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)  # the speech worker processes inherit these
    os.dup2(fd, 2)
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):  # not Linux
        os.nice(19)
    tts.exit_with_parent()  # a killed caller leaves no speech running, nor its workdir locked
    try:
        stages.run_stage(config, workdir, force=force)
    except BaseException as e:  # noqa: BLE001 - the caller reruns the stage and reports
        print(f"background tts stage stopped: {type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)
