"""Multi-host for real: two launch.py processes joined by jax.distributed on localhost.

A tiny student pipeline (a text teacher, its soft labels, a student) runs once as 2 processes
with one CPU device each, and once as 1 process with 2 devices, with the same global batches.
The teacher's parameters must be equal bitwise: the global batches do not depend on the process
count (mh3.data.batching), the gradient psum over 2 devices adds the same two numbers in both
set-ups, and dropout keys fold in the global device index. The student's are equal to float
rounding (see the test for why).

Process 1 runs with the workdir mounted read-only in its own mount namespace (as root, which
CI is): any file it tried to write there would end its run, so its success proves that only
process 0 writes the shared files.
"""

import json
import os
import shutil
import socket
import subprocess
import sys

import numpy as np
import pytest
from conftest import xla_flags
from safetensors.numpy import load_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _env(devices: int) -> dict:
    env = dict(os.environ)
    env["XLA_FLAGS"] = xla_flags(devices)
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _read_only_prefix(workdir: str) -> list[str]:
    """Runs a command with `workdir` read-only for it alone (needs root and util-linux)."""
    if os.geteuid() != 0 or not shutil.which("unshare"):
        return []
    script = (
        f'mount --bind "{workdir}" "{workdir}" && mount -o remount,bind,ro "{workdir}" && exec "$@"'
    )
    return ["unshare", "--mount", "sh", "-c", script, "sh"]


@pytest.fixture(scope="module")
def runs(tiny_bert, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("multihost")
    config = (
        f"--config=configs/student.py:smoke,teachers=text,model={tiny_bert},text_model={tiny_bert}"
    )
    # The student in one batch shape (its data block; the teacher's keeps the buckets):
    # fewer compiles in each of the three processes.
    cmd = [sys.executable, "launch.py", config, "--config.data.bucketing=false"]

    single = tmp / "one-process"
    done = subprocess.run(cmd + [f"--workdir={single}"], cwd=ROOT, env=_env(2),
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]

    multi = tmp / "two-processes"
    multi.mkdir()
    port = _free_port()
    procs = []
    for pid in (0, 1):
        flags = [f"--workdir={multi}", f"--coordinator_address=localhost:{port}",
                 "--num_processes=2", f"--process_id={pid}"]  # fmt: skip
        prefix = _read_only_prefix(str(multi)) if pid == 1 else []
        log = open(tmp / f"process{pid}.log", "w")
        procs.append((subprocess.Popen(prefix + cmd + flags, cwd=ROOT, env=_env(1), stdout=log,
                                       stderr=subprocess.STDOUT), log))  # fmt: skip
    codes = []
    for proc, log in procs:
        try:
            codes.append(proc.wait(timeout=600))
        finally:
            if proc.poll() is None:
                proc.kill()
            log.close()
    logs = [(tmp / f"process{pid}.log").read_text() for pid in (0, 1)]
    assert codes == [0, 0], "\n".join(text[-3000:] for text in logs)
    return single, multi, logs


def test_two_processes_train_the_same_parameters_as_two_local_devices(runs):
    single, multi, _ = runs

    def max_diff(model):
        a = load_file(str(single / model / "model.safetensors"))
        b = load_file(str(multi / model / "model.safetensors"))
        assert a.keys() == b.keys()
        return max(float(np.abs(a[k].astype(np.float64) - b[k]).max()) for k in a)

    # Training is the same computation on the same global batches: bitwise.
    assert max_diff("teachers/text/model") == 0.0
    # The student learns from soft labels that each process computes with the saved teacher
    # over every example, one device at 8 rows a batch, where the 1-process run puts 4 rows on
    # each of 2 devices. With YNNPACK's library fusions (XLA's default, off under mh3's
    # default flags, mh3/__init__.py) matmuls of those shapes rounded differently, about 5e-9;
    # the bound allows that, and it reaches the student's parameters at the same order.
    soft = [np.load(next((d / "soft_labels").glob("*.npz")))["logits"] for d in (single, multi)]
    assert np.abs(soft[0] - soft[1]).max() < 1e-6
    assert max_diff("run0/model") < 1e-6


def test_metrics_cover_every_process_and_are_written_once(runs):
    single, multi, logs = runs
    for name in ("results.json", "teachers/text/results.json", "run0/run.json"):
        one, two = (json.loads((d / name).read_text()) for d in (single, multi))
        for split in ("val", "test"):
            # Evaluation gathers the rows of both processes: the same metrics over all rows.
            for key in ("n", "accuracy", "f1_weighted", "f1_weighted_batch_mean", "loss"):
                if key in one[split]:
                    got, want = two[split][key], one[split][key]
                    assert got == pytest.approx(want, abs=1e-6), (name, split, key)
    for name in ("teachers/text/metrics.jsonl", "run0/metrics.jsonl"):
        one, two = ((d / name).read_text().splitlines() for d in (single, multi))
        assert len(two) == len(one)  # one writer: no interleaved duplicate lines
    # Both processes took part: each logged joining the run.
    assert "process 0 of 2 joined" in logs[0] and "process 1 of 2 joined" in logs[1]
