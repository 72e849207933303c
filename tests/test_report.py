"""report.md and results.csv of the student stage: mean ± std tables over runs, per-class
scores, ROC-AUC, the hyper-parameters of every model, the paper's row and embedded figures."""

import csv
import json
import os
import pathlib
import re

import numpy as np
import pytest

from mh3.distill import report

CLASSES = ("a", "b")


def _results(acc, auc=None):
    m = {k: acc for k in report.METRICS} | {f"f1_{c}": acc for c in CLASSES}
    m |= {f"precision_{c}": acc for c in CLASSES} | {f"recall_{c}": acc for c in CLASSES}
    return {"val": m | {"roc_auc": auc}, "test": m | {"roc_auc": auc}}


def test_mean_and_sample_std_over_runs_and_plain_values_for_one_run(tmp_path):
    rows = []
    for run, acc in enumerate((0.70, 0.80, 0.90)):
        rows += report.rows_for(run, run, "student", _results(acc, auc=acc), CLASSES)
    rows += report.rows_for(0, 0, "text", _results(0.75), CLASSES)
    path = tmp_path / "report.md"
    report.write_markdown(str(path), rows, ["text", "student"], CLASSES, title="t", notes=["n"])
    text = path.read_text()
    std = 100 * np.std([0.7, 0.8, 0.9], ddof=1)  # 10.00: the sample std papers report
    headline = [ln for ln in text.splitlines() if ln.startswith("| student | 3 |")]
    # accuracy, F1 macro, F1 weighted and ROC-AUC, in both splits
    assert len(headline) == 2 and all(ln.count(f"80.00 ± {std:.2f}") == 4 for ln in headline)
    per_class = [ln for ln in text.splitlines() if ln.startswith("| student | a |")]
    assert len(per_class) == 2 and all(ln.count(f"80.00 ± {std:.2f}") == 3 for ln in per_class)
    assert "| model | class | precision | recall | F1 |" in text
    teacher = [ln for ln in text.splitlines() if ln.startswith("| text | 1 |")]
    # A single run: plain values; its ROC-AUC was undefined: n/a.
    assert teacher and all(ln == "| text | 1 | 75.00 | 75.00 | 75.00 | n/a |" for ln in teacher)

    report.write_csv(str(tmp_path / "results.csv"), rows, CLASSES)
    with open(tmp_path / "results.csv") as f:
        read = list(csv.DictReader(f))
    assert [r["model"] for r in read] == ["student"] * 6 + ["text"] * 2
    assert list(read[0]) == report.columns(CLASSES)
    # The DESIGN contract's columns come first; the later ones are appended after them.
    assert report.columns(CLASSES)[:10] == [
        "run", "seed", "model", "split", *report.METRICS, "f1_a", "f1_b",
    ]  # fmt: skip
    assert read[-1]["roc_auc"] == ""  # null ROC-AUC: an empty cell, read back as undefined
    again = report.summarize(read, "text", CLASSES)["test"]
    assert again["roc_auc"] is None and again["undefined_runs"] == {"roc_auc": 1}


def test_roc_auc_undefined_in_some_runs_is_averaged_over_the_rest_and_said(tmp_path):
    rows = []
    for run, auc in enumerate((0.6, None, 0.8)):
        rows += report.rows_for(run, run, "student", _results(0.5, auc), CLASSES)
    s = report.summarize(rows, "student", CLASSES)
    assert s["test"]["roc_auc"] == pytest.approx(0.7) and s["test"]["runs"] == 3
    assert s["test_std"]["roc_auc"] == pytest.approx(np.std([0.6, 0.8], ddof=1))
    path = tmp_path / "report.md"
    report.write_markdown(str(path), rows, ["student"], CLASSES, title="t", notes=[])
    assert "ROC-AUC undefined (a class missing from the split) in: student (1 of 3 runs" in (
        path.read_text()
    )


def test_paper_protocol_reports_the_population_std():
    rows = []
    for run, acc in enumerate((0.70, 0.80, 0.90)):
        rows += report.rows_for(run, run, "student", _results(acc), CLASSES)
    sample = report.summarize(rows, "student", CLASSES)["test_std"]["accuracy"]
    population = report.summarize(rows, "student", CLASSES, ddof=0)["test_std"]["accuracy"]
    assert sample == np.std([0.7, 0.8, 0.9], ddof=1)
    assert population == np.std([0.7, 0.8, 0.9]) and population < sample


def test_table4_rows_match_dataset_and_teachers_and_show_beside_ours(tmp_path):
    label, values = report.table4_row("sdcnl", "text+emotion+audio", "bert-base-uncased")
    assert label == "3M-Health All" and values["f1_weighted"] == pytest.approx(0.749)
    assert report.table4_row("sdcnl", "none", "roberta-base")[0] == "RoBERTa"
    assert report.table4_row("deptweet", "text+emotion", "x")[1]["accuracy"] == 0.8403
    # Combinations and datasets the paper did not report have no row.
    assert report.table4_row("sdcnl", "text", "bert-base-uncased") is None
    assert report.table4_row("dreaddit", "text+emotion", "bert-base-uncased") is None

    rows = report.rows_for(0, 0, "student", _results(0.7), CLASSES)
    path = tmp_path / "report.md"
    ref = report.table4_row("sdcnl", "text+audio", "bert-base-uncased")
    report.write_markdown(str(path), rows, ["student"], CLASSES, title="t", notes=[],
                          reference=ref)  # fmt: skip
    text = path.read_text()
    assert "| paper: 3M-Health Text+Audio | 10 | 76.52 | 76.50 | 76.51 | n/a |" in text
    assert "Table 4" in text and "2407.09020" in text


def test_curves_plot_the_ce_and_kd_parts_where_logged(tmp_path):
    records = [
        {
            "step": s,
            "epoch": 0,
            "split": "train",
            "loss": 1 / s,
            "loss_ce": 0.6 / s,
            "loss_kd": 0.4 / s,
        }
        for s in (1, 2, 3)
    ] + [{"step": 3, "epoch": 0, "split": "val", "loss": 0.9, "loss_ce": 0.5, "f1_weighted": 0.5}]
    log = tmp_path / "metrics.jsonl"
    log.write_text("".join(json.dumps(r) + "\n" for r in records))
    png = tmp_path / "curves.png"
    report.plot_curves(str(png), [str(log), str(tmp_path / "missing.jsonl")], "student",
                       loss_name="CE + KD (T=1)")  # fmt: skip
    assert png.stat().st_size > 1000


@pytest.fixture(scope="module")
def smoke_student(smoke_students):
    """A finished smoke student distilled from a tiny text teacher, 2 runs."""
    workdir = pathlib.Path(smoke_students["text"])
    return workdir, json.loads((workdir / "results.json").read_text())


def test_smoke_report_has_roc_auc_per_class_scores_hyperparameters_and_figures(smoke_student):
    workdir, results = smoke_student
    text = (workdir / "report.md").read_text()
    assert "| model | runs | accuracy | f1_macro | f1_weighted | roc_auc |" in text
    assert "| model | class | precision | recall | F1 |" in text
    classes = results["data"]["classes"]
    for c in classes:
        assert re.search(rf"^\| student \| {re.escape(c)} \| ", text, re.M)
    assert results["test"]["runs"] == 2 and "roc_auc" in results["test"]
    assert all(f"precision_{c}" in results["test"] for c in classes)

    # The hyper-parameters of the student and of its teacher, from their config blocks.
    hp = text.split("## Hyper-parameters")[1]
    assert "| | student | text teacher |" in hp
    for name in ("model", "layers", "attention heads", "hidden activation", "dropout",
                 "optimizer", "learning rate", "weight decay", "batch size", "epochs",
                 "max length", "training loss"):  # fmt: skip
        assert re.search(rf"^\| {name} \| ", hp, re.M), name
    assert "| learning rate | 8e-05 | 8e-05 |" in hp and "| batch size | 8 | 8 |" in hp
    assert "| training loss | CE + KD (T=1) | CE |" in hp

    # Figures embedded with paths relative to report.md, and every one on disk.
    images = re.findall(r"!\[[^\]]+\]\(([^)]+)\)", text)
    assert {"confusion_test_runs.png", "run0/confusion_test.png", "curves_student.png"} <= set(
        images
    )
    assert any("teachers/text/confusion_test.png" in i for i in images)
    for rel in images:
        assert not os.path.isabs(rel) and (workdir / rel).stat().st_size > 1000, rel
    # Dreaddit/demo has no Table 4 row: nothing is claimed beside ours.
    assert "| paper:" not in text

    with open(workdir / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert {"roc_auc", f"precision_{classes[0]}", f"recall_{classes[0]}"} <= set(rows[0])
