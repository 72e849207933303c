"""Test set-up: 4 fake CPU devices for pmap tests, a quick XLA compile level, no model hub.

These must be set before jax or huggingface_hub are imported anywhere, hence here; so is the
session's compilation cache folder.
"""

import atexit
import fcntl
import os
import shutil
import sys
import tempfile


def xla_flags(devices: int) -> str:
    """XLA_FLAGS for a test process with `devices` fake CPU devices.

    Tests compile many programs and run each for a few steps at hidden size 32, so XLA's
    backend optimisation (LLVM) is most of their cost and buys nothing: a tiny BERT train step
    compiles in 2.3 s at level 0 against 5.7 s at the default, and a cold smoke student
    pipeline takes 57 s against 78 s. Users' runs keep XLA's default level.
    """
    return f"--xla_force_host_platform_device_count={devices} --xla_backend_optimization_level=0"


os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + xla_flags(4)).strip()
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# One on-disk compilation cache for the session: the many launch.py subprocesses (and reruns
# in one process) compile the same tiny steps; reading them back keeps the suite fast.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="mh3-jax-cache-")
    atexit.register(shutil.rmtree, os.environ["JAX_COMPILATION_CACHE_DIR"], True)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.path.join(os.path.dirname(ROOT), "shared", "data")
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


import pytest  # noqa: E402  (after the environment set-up above, on purpose)


def once_per_session(tmp_path_factory, name: str, make) -> str:
    """Runs `make(folder)` once for the whole test session, pytest-xdist workers included, and
    returns the folder. The first worker to ask makes it under the session's shared temporary
    folder while holding a lock; the others wait, then reuse it. Tests only read what it made.

    Why: a session fixture runs once per worker, and the smoke students below cost ~35 s."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # this session's folder, shared by its workers (pytest-N/)
    folder = root / name
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if not (folder / ".made").exists():
            shutil.rmtree(folder, ignore_errors=True)  # a failed attempt's leftovers
            folder.mkdir()
            make(folder)
            (folder / ".made").touch()
    return str(folder)


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory):
    """A tiny random BERT (hidden 32, 2 layers) with MiniLM's real uncased tokenizer."""

    def make(folder):
        import torch
        import transformers as hf

        from mh3.weights import resolve_checkpoint

        torch.manual_seed(0)
        config = hf.BertConfig(
            vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
            intermediate_size=37,
        )  # fmt: skip
        hf.BertModel(config).save_pretrained(folder)
        hf.AutoTokenizer.from_pretrained(resolve_checkpoint("minilm")).save_pretrained(folder)

    # Shared by the workers too: the path is part of the configs of the students below.
    return once_per_session(tmp_path_factory, "tiny-bert", make)


def smoke_student_args(tiny_bert: str, teachers: str) -> str:
    """configs/student.py's arguments for a smoke student on the tiny BERT (the same for
    launch.py's `--config=configs/student.py:ARGS` and `smoke_student_config`)."""
    return f"teachers={teachers},smoke,model={tiny_bert},text_model={tiny_bert}"


def smoke_student_config(tiny_bert: str, teachers: str = "text", **overrides):
    """A smoke student config on the tiny BERT in one batch shape (fewer compiles), teacher
    included; `overrides` are top-level keys (runs, retrain_teachers)."""
    from configs import student

    config = student.get_config(smoke_student_args(tiny_bert, teachers))
    for block in [config] + ([config.teacher_text] if "teacher_text" in config else []):
        block.data.bucketing = False
    config.update(overrides)
    return config


@pytest.fixture(scope="session")
def smoke_students(tiny_bert, tmp_path_factory):
    """Finished smoke students of 2 runs each (tiny BERT, one batch shape): with no teachers,
    and with a tiny text teacher; shared by the report, comparison and student tests, which
    only read them (test_student extends a copy)."""
    from mh3 import stages

    def make(root):
        for teachers in ("none", "text"):
            config = smoke_student_config(tiny_bert, teachers, runs=2)
            stages.run_stage(config, str(root / teachers))

    root = once_per_session(tmp_path_factory, "students", make)
    return {teachers: os.path.join(root, teachers) for teachers in ("none", "text")}
