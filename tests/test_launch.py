"""launch.py end to end: a stage runs from the command line, and user mistakes exit 2 in one line."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT


def launch(*args, cwd=ROOT, python_flags=()):
    env = dict(os.environ, HF_HUB_OFFLINE="1", JAX_PLATFORMS="cpu")
    return subprocess.run(
        [sys.executable, *python_flags, os.path.join(ROOT, "launch.py"), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_describe_stage_runs_and_writes_workdir(tiny_bert, tmp_path):
    workdir = tmp_path / "wd"
    run = launch(f"--config=configs/describe.py:model={tiny_bert}", f"--workdir={workdir}")
    assert run.returncode == 0, run.stderr
    results = json.loads((workdir / "results.json").read_text())
    config = json.loads((workdir / "config.json").read_text())
    assert config["stage"] == "describe" and config["model"] == tiny_bert
    assert results["layers"] == 2 and results["hidden_size"] == 32
    assert results["hidden_shape"][2] == 32 and results["tokens"] > 5
    assert "parameters" in run.stdout
    # Same config again: the finished stage is not rerun (results are reused as they are).
    again = launch(f"--config=configs/describe.py:model={tiny_bert}", f"--workdir={workdir}")
    assert again.returncode == 0 and "parameters" not in again.stdout


def test_describe_needs_no_torch_and_names_a_missing_tokenizer(tiny_bert, tmp_path):
    """A safetensors checkpoint is described without importing torch (its tokenizer loads as
    training loads it); a checkpoint without tokenizer files ends in one error line (transformers
    alone would make a tokenizer of its special tokens and map every word to [UNK])."""
    args = [f"--config=configs/describe.py:model={tiny_bert}", f"--workdir={tmp_path / 'wd'}"]
    run = launch(*args, python_flags=("-X", "importtime"))  # the imports' list on stderr
    assert run.returncode == 0, run.stderr[-2000:]
    imported = {line.rsplit("|", 1)[-1].strip() for line in run.stderr.splitlines()
                if line.startswith("import time:")}  # fmt: skip
    assert "transformers" in imported and "torch" not in imported
    bare = tmp_path / "no-tokenizer"
    bare.mkdir()
    for name in ("config.json", "model.safetensors"):
        (bare / name).write_bytes((Path(tiny_bert) / name).read_bytes())
    bad = launch(f"--config=configs/describe.py:model={bare}", f"--workdir={tmp_path / 'wd2'}")
    lines = [line for line in bad.stderr.splitlines() if line.strip()]
    assert bad.returncode == 2 and len(lines) == 1, bad.stderr[-2000:]
    assert lines[0].startswith("error: ") and "no tokenizer files" in lines[0]
    assert not (tmp_path / "wd2" / "results.json").exists()


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--config=configs/describe.py", "--config.sentnce=hi"], "unknown config key: sentnce"),
        (["--config=configs/describe.py:modl=x"], "unknown argument 'modl'"),
        (["--config=configs/describe.py:model=/no/such/folder"], "does not exist"),
        (["--config=configs/no_such_stage.py"], "cannot load config file"),
        (["--config=configs/describe.py", "--config.stage=nope"], "unknown stage 'nope'"),
    ],
)
def test_user_mistakes_exit_2_with_one_line(args, expected, tmp_path):
    run = launch(*args, f"--workdir={tmp_path / 'wd'}")
    assert run.returncode == 2
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], run.stderr


_CACHE_SCRIPT = """
import sys
sys.argv = ["launch.py"]
import jax, launch
for flag in (None, "", UNWRITABLE):
    launch._compilation_cache(flag)
    print(jax.config.jax_compilation_cache_dir, jax.config.jax_compilation_cache_max_size)
    if flag is None:  # a compile now writes its program to the folder (conftest's min time 0)
        jax.jit(lambda x: x * 3)(1.0)
"""


@pytest.mark.parametrize("jax_env", [False, True])
def test_compilation_cache_folder_default_off_and_unwritable(jax_env, tmp_path):
    """launch.py's --compilation_cache: unset -> $JAX_COMPILATION_CACHE_DIR as JAX has it, else
    $XDG_CACHE_HOME/mh3/xla with a size limit; '' -> off; a folder that cannot be made -> off
    with one warning line (the run goes on)."""
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_COMPILATION_CACHE")}
    env["XDG_CACHE_HOME"] = str(tmp_path / "xdg")
    if jax_env:
        env["JAX_COMPILATION_CACHE_DIR"] = str(tmp_path / "jax-env")
    script = _CACHE_SCRIPT.replace("UNWRITABLE", repr(str(blocker / "xla")))  # under a file
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    default = tmp_path / ("jax-env" if jax_env else "xdg/mh3/xla")
    # The size limit only on mh3's own folder (see launch.py), never on a JAX-configured one.
    limit = -1 if jax_env else 2 << 30
    assert done.stdout.splitlines() == [f"{default} {limit}", f"None {limit}", f"None {limit}"]
    assert any(name.startswith("jit_") for name in os.listdir(default))
    warnings = [line for line in done.stderr.splitlines() if "compilation cache" in line]
    assert len(warnings) == 1 and str(blocker / "xla") in warnings[0]
    assert "--compilation_cache=DIR" in warnings[0]
