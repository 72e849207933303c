"""The compare stage: finished student workdirs side by side, and one clear line otherwise."""

import csv
import json
import os
import shutil
import subprocess
import sys

import ml_collections
import pytest
from conftest import ROOT

from mh3 import stages
from mh3.distill import report
from mh3.errors import UserError


@pytest.fixture(scope="module")
def students(smoke_students):
    """Two finished smoke students of 2 runs each: no teachers, and a tiny text teacher."""
    return smoke_students


def _compare(workdirs, out, labels=""):
    from configs import compare

    config = compare.get_config(f"workdirs={'+'.join(map(str, workdirs))},labels={labels}")
    return stages.run_stage(config, str(out))


def _table(md: str) -> dict:
    """label -> cells of comparison.md's table."""
    lines = [ln for ln in md.splitlines() if ln.startswith("| ") and not ln.startswith("| label")]
    return {
        cells[0]: cells for cells in ([c.strip() for c in ln.strip("|").split("|")] for ln in lines)
    }


def test_comparison_rows_equal_each_students_results(students, tmp_path):
    args = [
        sys.executable, os.path.join(ROOT, "launch.py"),
        f"--config=configs/compare.py:workdirs={students['none']}+{students['text']},"
        "labels=baseline+distilled",
        f"--workdir={tmp_path / 'cmp'}",
    ]  # fmt: skip
    done = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    md = (tmp_path / "cmp" / "comparison.md").read_text()
    assert "ddof=1" in md and "![" in md and "(comparison.png)" in md
    assert (
        "| label | teachers | student | protocol | runs | test accuracy | test F1 weighted | "
        "test F1 macro | test ROC-AUC | val F1 weighted | workdir |" in md
    )
    table = _table(md)
    assert list(table) == ["baseline", "distilled"]
    for label, teachers in (("baseline", "none"), ("distilled", "text")):
        res = json.loads(open(os.path.join(students[teachers], "results.json")).read())
        row = table[label]
        cfg = json.loads(open(os.path.join(students[teachers], "config.json")).read())
        assert row[1:5] == [teachers, cfg["model"]["name"], "clean", "2"]
        expect = [
            report.cell(res[split][key], res[f"{split}_std"][key], True)
            for split, key in (("test", "accuracy"), ("test", "f1_weighted"),
                               ("test", "f1_macro"), ("test", "roc_auc"), ("val", "f1_weighted"))
        ]  # fmt: skip
        assert row[5:10] == expect and "±" in row[5]
        assert row[10] == students[teachers]
    assert (tmp_path / "cmp" / "comparison.png").stat().st_size > 1000
    results = json.loads((tmp_path / "cmp" / "results.json").read_text())
    assert results["stage"] == "compare" and results["std_ddof"] == 1
    assert [i["label"] for i in results["inputs"]] == ["baseline", "distilled"]
    assert [i["teachers"] for i in results["inputs"]] == ["none", "text"]


def test_results_csv_from_before_the_new_columns_reads_them_from_each_run(students, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(students["text"], old, ignore=shutil.ignore_patterns("model", "checkpoints"))
    with open(old / "results.csv") as f:
        rows = list(csv.DictReader(f))
    contract = report.columns(json.loads((old / "results.json").read_text())["data"]["classes"])
    contract = contract[: contract.index("roc_auc")]
    with open(old / "results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=contract, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    new = _compare([students["text"]], tmp_path / "a")["inputs"][0]
    again = _compare([old], tmp_path / "b")["inputs"][0]
    assert again["test"]["roc_auc"] == pytest.approx(new["test"]["roc_auc"])
    assert again["test_std"] == pytest.approx(new["test_std"])


def _copy(src, dst, edit=None, rehash=False):
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("model", "checkpoints"))
    cfg = json.loads((dst / "config.json").read_text())
    if edit:
        edit(cfg)
        (dst / "config.json").write_text(json.dumps(cfg))
    if rehash:  # as if that student had really been run with the edited config
        res = json.loads((dst / "results.json").read_text())
        res["config_hash"] = stages.config_hash(ml_collections.ConfigDict(cfg))
        (dst / "results.json").write_text(json.dumps(res))
    return dst


def test_a_workdir_that_is_not_a_finished_student_is_one_clear_error(students, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    teacher = os.path.join(students["text"], "teachers", "text")
    unfinished = _copy(students["none"], tmp_path / "unfinished")
    (unfinished / "results.json").unlink()
    # A later student command with another config was killed there: config.json moved on.
    moved = _copy(
        students["none"], tmp_path / "moved", lambda c: c["optim"].update(learning_rate=1.0)
    )
    for bad, why in (
        (empty, "no config.json"),
        (tmp_path / "missing", "no such folder"),
        (teacher, "it holds the 'teacher_text' stage"),
        (unfinished, "no results.json"),
        (moved, "from another config than its config.json"),
    ):
        with pytest.raises(UserError, match="is not a finished student workdir") as e:
            _compare([students["none"], bad], tmp_path / "out")
        assert str(bad) in str(e.value) and why in str(e.value) and "\n" not in str(e.value)

    args = [
        sys.executable, os.path.join(ROOT, "launch.py"),
        f"--config=configs/compare.py:workdirs={students['none']}+{empty}",
        f"--workdir={tmp_path / 'cli'}",
    ]  # fmt: skip
    done = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 2
    errors = [ln for ln in done.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and f"{empty} is not a finished student workdir" in errors[0]
    assert "Traceback" not in done.stderr

    with pytest.raises(UserError, match="labels has 1 names for 2 workdirs"):
        _compare([students["none"], students["text"]], tmp_path / "out", labels="one")


def test_students_of_different_datasets_are_refused(students, tmp_path):
    other = _copy(students["text"], tmp_path / "other",
                  lambda c: c["data"].update(name="dreaddit"), rehash=True)  # fmt: skip
    with pytest.raises(UserError, match="different data.*not comparable"):
        _compare([students["none"], other], tmp_path / "out")
