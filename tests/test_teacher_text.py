"""The text-teacher stage end to end: a smoke run through launch.py, its export loaded back."""

import json
import os
import subprocess
import sys

import numpy as np

import mh3
from configs import teacher_text
from mh3 import data

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_smoke_run_exports_a_teacher_that_reproduces_its_test_metrics(tiny_bert, tmp_path):
    workdir = tmp_path / "teacher"
    # The tiny BERT with MiniLM's real tokenizer: the same stage, a 20th of the compile time
    # (real MiniLM weights are checked against HF in test_bert.py).
    cmd = [
        sys.executable,
        "launch.py",
        "--config=configs/teacher_text.py:smoke",
        f"--workdir={workdir}",
        f"--config.model.name={tiny_bert}",
        f"--config.data.tokenizer={tiny_bert}",
    ]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads((workdir / "results.json").read_text())
    for split in ("val", "test"):
        assert {"accuracy", "f1_macro", "f1_weighted", "confusion_matrix"} <= set(results[split])
    assert results["data"]["classes"] and results["data"]["test"] == results["test"]["n"]
    assert (workdir / "confusion_test.png").read_bytes()[:4] == b"\x89PNG"
    assert [json.loads(x)["split"] for x in open(workdir / "metrics.jsonl")].count("val") == 1

    predictor = mh3.load(str(workdir / "model"))
    assert list(predictor.classes) == results["data"]["classes"]
    tok = predictor.tokenizer
    assert tok.num_added > 0  # _USER_/_URL_/emoji tokens survive the round trip
    assert predictor.params["embeddings"]["word_embeddings"]["embedding"].shape[0] == tok.vocab_size

    # Raw test posts through mh3.load reproduce the stage's test accuracy.
    config = teacher_text.get_config("smoke")
    test = data.load_dataset(config.data).split("test")
    probs = predictor.predict([e.raw for e in test])
    accuracy = np.mean(probs.argmax(-1) == np.array([e.label for e in test]))
    assert accuracy == results["test"]["accuracy"]
    # ... and its per-example probabilities (a random tiny model's accuracy alone says little).
    written = np.loadtxt(workdir / "predictions_test.csv", delimiter=",", skiprows=1,
                         usecols=range(4, 4 + len(predictor.classes)))  # fmt: skip
    np.testing.assert_allclose(probs, written, atol=2e-6)

    # The same command again finds the finished stage and does not retrain.
    again = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "already done" in again.stderr


def test_paper_protocol_sets_the_spec_teacher_settings():
    config = teacher_text.get_config("dataset=sdcnl,protocol=paper")
    assert config.model.hidden_act == "relu" and config.model.num_hidden_layers == 4
    assert config.optim.name == "adam_l2" and config.optim.learning_rate == 5e-5
    assert config.train.model_choice == "last" and config.train.epochs == 4
    assert config.data.batch_size == 64
