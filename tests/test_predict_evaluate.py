"""Using a saved model: the predict and evaluate stages, and their one-line errors (issue #12)."""

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT

import mh3
from configs import evaluate, predict, teacher_text
from mh3 import stages
from mh3.errors import UserError


@pytest.fixture(scope="module")
def teacher(tiny_bert, tmp_path_factory):
    """A tiny text teacher trained on the demo data (smoke), with its results."""
    config = teacher_text.get_config("smoke")
    config.model.name = config.data.tokenizer = tiny_bert
    config.data.bucketing = False
    workdir = tmp_path_factory.mktemp("teacher")
    return stages.run_stage(config, str(workdir))


POSTS = [
    "I can't sleep and everything feels pointless :(",
    "Went hiking with @friend today, check https://example.com",
    "Exams next week, so much pressure 😩",
]


def _predict_config(model, path, **kw):
    config = predict.get_config()
    config.model, config.input = model, str(path)
    config.update(kw)
    return config


def test_predict_labels_csv_jsonl_and_txt_files_like_mh3_load(teacher, tmp_path):
    model = teacher["model"]
    expect = mh3.load(model).predict(POSTS)
    assert expect.shape == (3, 3) and np.allclose(expect.sum(-1), 1, atol=1e-5)
    (tmp_path / "posts.txt").write_text("\n".join(POSTS[:1] + [""] + POSTS[1:]) + "\n")
    with open(tmp_path / "posts.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["post_id", "body"])
        w.writerows([[f"p{i}", t] for i, t in enumerate(POSTS)])
    (tmp_path / "posts.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in POSTS))
    runs = {
        "txt": _predict_config(model, tmp_path / "posts.txt"),
        "csv": _predict_config(
            model, tmp_path / "posts.csv", text_column="body", id_column="post_id"
        ),
        "jsonl": _predict_config(model, tmp_path / "posts.jsonl"),
    }
    ids = {"txt": ["1", "3", "4"], "csv": ["p0", "p1", "p2"], "jsonl": ["1", "2", "3"]}
    for kind, config in runs.items():
        results = stages.run_stage(config, str(tmp_path / kind))
        rows = list(csv.DictReader(open(results["predictions"])))
        classes = list(mh3.load(model).classes)
        assert list(rows[0]) == ["id", "predicted", *(f"p_{c}" for c in classes)]
        assert [r["id"] for r in rows] == ids[kind]
        probs = np.array([[float(r[f"p_{c}"]) for c in classes] for r in rows])
        np.testing.assert_allclose(probs, expect, atol=2e-6)
        assert [r["predicted"] for r in rows] == [classes[i] for i in expect.argmax(-1)]


def test_evaluate_reproduces_the_training_stages_test_metrics(teacher, tmp_path):
    config = evaluate.get_config("smoke")
    config.model = teacher["model"]
    results = stages.run_stage(config, str(tmp_path))
    for key in ("accuracy", "f1_macro", "f1_weighted", "roc_auc"):
        assert results["test"][key] == pytest.approx(teacher["test"][key], abs=1e-6), key
    assert results["test"]["confusion_matrix"] == teacher["test"]["confusion_matrix"]
    assert {"precision_stress", "recall_stress", "f1_stress"} <= set(results["test"])
    assert (tmp_path / "confusion_test.png").read_bytes()[:4] == b"\x89PNG"
    rows = list(csv.DictReader(open(tmp_path / "predictions_test.csv")))
    assert len(rows) == results["data"]["test"] == results["test"]["n"]
    train_rows = list(csv.DictReader(open(teacher["test"]["predictions"])))
    assert rows == train_rows  # the training stage wrote the same per-example predictions


def test_bad_inputs_end_in_one_line_and_write_nothing(teacher, tmp_path):
    model = teacher["model"]
    (tmp_path / "empty.txt").write_text("\n\n")
    (tmp_path / "notext.csv").write_text("id,body\n1,hello\n")
    cases = {
        "not a saved model": (_predict_config(str(tmp_path), tmp_path / "empty.txt"), "mh3.json"),
        "no text column": (_predict_config(model, tmp_path / "notext.csv"), "no column 'text'"),
        "empty input": (_predict_config(model, tmp_path / "empty.txt"), "no posts to label"),
    }
    for name, (config, words) in cases.items():
        with pytest.raises(UserError, match=words):
            stages.run_stage(config, str(tmp_path / name))
        assert not os.path.exists(tmp_path / name / "predictions.csv"), name


def test_a_model_with_other_classes_is_refused(teacher, tmp_path):
    config = evaluate.get_config("dataset=dreaddit,smoke")
    config.model = teacher["model"]
    config.data.path = os.path.join(ROOT, "..", "shared", "data", "dreaddit")
    if not os.path.isdir(config.data.path):
        pytest.skip("the Dreaddit files are not in ../shared/data")
    with pytest.raises(UserError, match="differ from dataset dreaddit"):
        stages.run_stage(config, str(tmp_path))
    assert not (tmp_path / "results.json").exists()


def test_launch_prints_one_line_and_exits_2_for_a_folder_that_is_not_a_model(tmp_path):
    cmd = [
        sys.executable, "launch.py", f"--config=configs/predict.py:model={tmp_path}",
        f"--config.input={tmp_path}/x.txt", f"--workdir={tmp_path}/w",
    ]  # fmt: skip
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "not an mh3 saved model" in last
    assert "Traceback" not in done.stderr
