"""Trustworthy workdirs (issue #16): one run per workdir, and a failed command leaves a finished
workdir as it was. (Checkpoint binding: test_checkpoint_binding.py; damaged metrics lines and
checkpoints: test_train.py.)"""

import os
import subprocess
import sys
import time

import pytest
from conftest import ROOT

from configs import data as data_config
from mh3 import stages
from mh3.errors import UserError


def test_a_second_run_on_a_busy_workdir_ends_at_once_naming_the_holder(tmp_path):
    workdir = tmp_path / "busy"
    workdir.mkdir()
    with stages.workdir_lock(str(workdir)):
        with pytest.raises(UserError, match=rf"in use by process {os.getpid()} on "):
            stages.run_stage(data_config.get_config("smoke"), str(workdir))
        # The same from the command line: one line, exit code 2, nothing run.
        cmd = [
            sys.executable,
            "launch.py",
            "--config=configs/data.py:smoke",
            f"--workdir={workdir}",
        ]
        done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert done.returncode == 2, done.stderr[-2000:]
        last = done.stderr.strip().splitlines()[-1]
        assert last.startswith("error: workdir ") and f"process {os.getpid()}" in last
        assert not (workdir / "results.json").exists()


def test_a_lock_left_by_a_killed_run_does_not_block(tmp_path):
    workdir = tmp_path / "stale"
    workdir.mkdir()
    # What a killed run leaves: the file with its holder line, but no flock (the OS dropped it).
    (workdir / stages.LOCK).write_text("process 999999 on somewhere since long ago\n")
    results = stages.run_stage(data_config.get_config("smoke"), str(workdir))
    assert results["stage"] == "data"
    assert (workdir / stages.LOCK).read_text() == ""  # released


def test_a_failed_command_leaves_a_finished_workdir_as_it_was(tmp_path):
    workdir = tmp_path / "done"
    stages.run_stage(data_config.get_config("smoke"), str(workdir))
    before = {n: (workdir / n).read_bytes() for n in ("config.json", "results.json")}
    bad = data_config.get_config("dataset=dreaddit,smoke")
    bad.data.path = str(tmp_path / "no-such-folder")
    with pytest.raises(UserError, match="does not exist"):
        stages.run_stage(bad, str(workdir))
    assert {n: (workdir / n).read_bytes() for n in before} == before
    # ... and the finished stage is still recognised as done.
    assert stages.is_done(data_config.get_config("smoke"), str(workdir))


def _launch(*args):
    cmd = [sys.executable, "launch.py", *args]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_an_unusable_workdir_is_one_line_and_exit_2(tmp_path):
    (tmp_path / "a-file").write_text("x")
    for workdir, words in ((tmp_path / "a-file", "it is a file"), ("/proc/mh3-x", "cannot be")):
        done = _launch("--config=configs/data.py:smoke", f"--workdir={workdir}")
        assert done.returncode == 2, done.stderr[-2000:]
        last = done.stderr.strip().splitlines()[-1]
        assert last.startswith(f"error: workdir {workdir} cannot be written") and words in last
        assert "Traceback" not in done.stderr


@pytest.fixture
def tiny_disk(tmp_path):
    """A 2 MB file system (tmpfs; needs root, as on the CI machines), unmounted afterwards."""
    mount = tmp_path / "disk"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)])
    if made.returncode:
        pytest.skip("cannot mount a small tmpfs here (not root)")
    yield mount
    subprocess.run(["umount", "-l", str(mount)])


def test_a_full_disk_mid_run_ends_in_one_line_and_exit_2(tiny_bert, tiny_disk):
    # The smoke teacher's first checkpoint does not fit in 2 MB (Orbax fails in its threads).
    done = _launch(
        "--config=configs/teacher_text.py:smoke", f"--workdir={tiny_disk}/w",
        f"--config.model.name={tiny_bert}", f"--config.data.tokenizer={tiny_bert}",
        "--config.data.bucketing=false",
    )  # fmt: skip
    assert done.returncode == 2, done.stderr[-2000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "No space left on device" in last and "rerun" in last


def test_a_file_system_turned_read_only_mid_run_ends_in_one_line_and_the_rerun_resumes(
    tiny_bert, tmp_path
):
    workdir = tmp_path / "w"
    args = [
        "--config=configs/teacher_text.py:smoke", f"--workdir={workdir}",
        f"--config.model.name={tiny_bert}", f"--config.data.tokenizer={tiny_bert}",
        "--config.data.bucketing=false", "--config.train.num_steps=24",
        "--config.train.checkpoint_every_steps=2",
    ]  # fmt: skip
    log = tmp_path / "stderr.txt"
    with open(log, "w") as err:
        run = subprocess.Popen([sys.executable, "launch.py", *args], cwd=ROOT, stderr=err,
                               stdout=subprocess.DEVNULL)  # fmt: skip
        checkpoints = workdir / "checkpoints"
        deadline = time.monotonic() + 300
        while not (checkpoints.exists() and any(p.name.isdigit() for p in checkpoints.iterdir())):
            assert run.poll() is None and time.monotonic() < deadline, "no checkpoint was saved"
            time.sleep(0.05)
        # Once the first checkpoint is saved, the workdir turns read-only under the run: a
        # read-only bind mount stacked on it in one step (remounting the file system itself is
        # refused while files are open for writing).
        if subprocess.run(["mount", "-o", "bind,ro", str(workdir), str(workdir)]).returncode:
            run.kill()
            run.wait()
            pytest.skip("cannot mount here (not root)")
        try:
            code = run.wait(timeout=300)
        finally:
            subprocess.run(["umount", "-l", str(workdir)])
    stderr = log.read_text()
    assert code == 2, stderr[-2000:]
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "Read-only file system (errno 30)" in last
    assert "rerun the same command" in last and "Traceback" not in stderr
    # Writable again: the same command resumes from what was saved and finishes (saving only
    # at the end: the checkpoint interval does not bind a checkpoint, and a save every 2 steps
    # is most of the first run's time). 24 steps: the first run still saves ~10 more times
    # after the first checkpoint, seconds in which the workdir turns read-only.
    again = _launch(*args[:-1], "--config.train.checkpoint_every_steps=0")
    assert again.returncode == 0, again.stderr[-2000:]
    assert "resuming from checkpoint at step" in again.stderr


def test_closed_event_loop_errors_are_dropped_from_both_hooks_and_nothing_else():
    # tensorstore's callbacks raise these after a failed save; they reach the user through
    # sys.excepthook or, from a C++ thread, sys.unraisablehook (here: an exception in __del__).
    script = """if True:
        import sys
        from mh3.train import tracking
        tracking.quiet_orbax()

        class Dies:
            def __init__(self, message):
                self.message = message

            def __del__(self):
                raise RuntimeError(self.message)

        Dies("Event loop is closed")
        sys.excepthook(RuntimeError, RuntimeError("Event loop is closed"), None)
        Dies("another error")
    """
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "Event loop is closed" not in done.stderr
    assert "RuntimeError: another error" in done.stderr  # other errors are still shown
