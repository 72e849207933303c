"""report.md and results.csv of the student stage: the mean ± std tables over runs."""

import csv

import numpy as np

from mh3.distill import report

CLASSES = ("a", "b")


def _results(acc):
    m = {k: acc for k in report.METRICS} | {f"f1_{c}": acc for c in CLASSES}
    return {"val": m, "test": m}


def test_mean_and_sample_std_over_runs_and_plain_values_for_one_run(tmp_path):
    rows = []
    for run, acc in enumerate((0.70, 0.80, 0.90)):
        rows += report.rows_for(run, run, "student", _results(acc), CLASSES)
    rows += report.rows_for(0, 0, "text", _results(0.75), CLASSES)
    path = tmp_path / "report.md"
    report.write_markdown(str(path), rows, ["text", "student"], CLASSES, title="t", notes=["n"])
    text = path.read_text()
    std = 100 * np.std([0.7, 0.8, 0.9], ddof=1)  # 10.00: the sample std papers report
    student = [ln for ln in text.splitlines() if ln.startswith("| student |")]
    assert student and all(f"| 3 | 80.00 ± {std:.2f} |" in ln for ln in student)
    teacher = [ln for ln in text.splitlines() if ln.startswith("| text |")]
    assert teacher and all(ln.startswith("| text | 1 | 75.00 | 75.00 |") for ln in teacher)
    assert all("±" not in ln for ln in teacher)

    report.write_csv(str(tmp_path / "results.csv"), rows, CLASSES)
    with open(tmp_path / "results.csv") as f:
        read = list(csv.DictReader(f))
    assert [r["model"] for r in read] == ["student"] * 6 + ["text"] * 2
    assert list(read[0]) == report.columns(CLASSES)


def test_paper_protocol_reports_the_population_std():
    rows = []
    for run, acc in enumerate((0.70, 0.80, 0.90)):
        rows += report.rows_for(run, run, "student", _results(acc), CLASSES)
    sample = report.summarize(rows, "student", CLASSES)["test_std"]["accuracy"]
    population = report.summarize(rows, "student", CLASSES, ddof=0)["test_std"]["accuracy"]
    assert sample == np.std([0.7, 0.8, 0.9], ddof=1)
    assert population == np.std([0.7, 0.8, 0.9]) and population < sample
