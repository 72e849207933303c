"""The student pipeline: cached teacher soft labels; one finished smoke pipeline (text and
emotion teachers, run through launch.py as a user runs it) read by several tests: its saved
student in transformers, what it logged (issue #15: event files, log files, stage lines) and a
rerun that finds every stage cached; and a killed pipeline that resumes to the same report as
the session's smoke student (conftest). Each launch.py pipeline costs the suite ~40 s, so the
tests share them."""

import csv
import functools
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import jax
import ml_collections
import numpy as np
import pytest
from conftest import ROOT, smoke_student_args, smoke_student_config
from test_tracking import records, scalars

from configs import common
from mh3 import data
from mh3.distill import teachers
from mh3.train import export, optim
from mh3.weights import from_hf, grow_vocab


@pytest.fixture(scope="module")
def demo():
    return data.load_dataset(common.data_config("demo", "clean", smoke=True))


def test_cached_soft_labels_equal_per_batch_forward(tiny_bert, demo, tmp_path):
    tok = data.build_tokenizer(tiny_bert, demo)
    model, params = from_hf(tiny_bert, num_labels=len(demo.classes), seed=1)
    model, params = grow_vocab(model, params, tok.vocab_size, seed=1)
    folder = str(tmp_path / "teacher")
    save = functools.partial(
        export.save_text_model, folder, model, tokenizer=tok, classes=demo.classes, max_len=24,
        protocol="clean", data_fingerprint=demo.fingerprint,
    )  # fmt: skip
    save(params=params)
    calls = []

    def predict():
        calls.append(1)
        return teachers.teacher_logits({"model": folder}, demo, batch_size=8)

    cache = str(tmp_path / "soft_labels")
    logits = teachers.soft_labels("text", folder, demo, predict, cache)
    assert logits.shape == (len(demo.examples), 3) and calls == [1]

    # The same numbers from a plain forward pass, one example at a time, in global order.
    apply = jax.jit(model.apply)
    for ex in demo.examples[::7]:
        enc = tok.hf(ex.text, truncation=True, max_length=24, return_tensors="np")
        inputs = {k: v.astype(np.int32) for k, v in enc.items()}
        direct, _ = apply({"params": params}, inputs)
        np.testing.assert_allclose(logits[ex.index], np.asarray(direct)[0], atol=1e-5)

    def fail():
        raise AssertionError("the cache should have answered")

    np.testing.assert_array_equal(teachers.soft_labels("text", folder, demo, fail, cache), logits)
    # New teacher parameters -> a new cache entry, computed again.
    params["classifier"]["bias"] = params["classifier"]["bias"] + 1.0
    save(params=params)
    shifted = teachers.soft_labels("text", folder, demo, predict, cache)
    assert calls == [1, 1] and np.allclose(shifted, logits + 1.0, atol=1e-5)


def same_as_jsonl(tags: dict, path) -> None:
    """Every TensorBoard scalar is in metrics.jsonl under the same split, key and step."""
    by_place = {(r["split"], r["step"]): r for r in records(path)}
    for tag, points in tags.items():
        split, key = tag.split("/", 1)
        for step, value in points:
            assert by_place[(split, step)][key] == pytest.approx(value, rel=1e-6, abs=1e-6), tag


def pipeline_args(tiny_bert, workdir, teachers="text+emotion", runs=1):
    return [
        sys.executable,
        os.path.join(ROOT, "launch.py"),
        f"--config=configs/student.py:{smoke_student_args(tiny_bert, teachers)},runs={runs}",
        f"--workdir={workdir}",
        # One batch shape per model: fewer programs to trace (bucketing has its own tests).
        "--config.data.bucketing=false",
        "--config.teacher_text.data.bucketing=false",
    ]


def run_until(args, path, timeout=300):
    """Starts the pipeline and kills it (SIGKILL) as soon as `path` exists."""
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    proc = subprocess.Popen(
        args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + timeout
    while proc.poll() is None and not os.path.exists(path) and time.time() < deadline:
        time.sleep(0.05)
    killed = proc.poll() is None
    if killed:
        proc.send_signal(signal.SIGKILL)
    proc.wait()
    return killed


@pytest.fixture(scope="module")
def whole(tiny_bert, tmp_path_factory):
    """A finished smoke pipeline (text + emotion teachers, tiny student), never interrupted."""
    workdir = tmp_path_factory.mktemp("student") / "whole"
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    done = subprocess.run(
        pipeline_args(tiny_bert, workdir), cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "report: " in done.stdout
    return workdir, done


def test_saved_student_loads_in_transformers_with_mh3s_probabilities(whole, demo):
    import torch
    import transformers as hf

    import mh3

    whole, _ = whole
    folder = whole / "run0" / "model"
    predictor = mh3.load(str(folder))
    meta = json.loads((folder / "mh3.json").read_text())
    assert meta["kind"] == "text" and list(predictor.classes) == list(demo.classes)
    raw = [e.raw for e in demo.split("test")]
    ours = predictor.predict(raw)

    model = hf.AutoModelForSequenceClassification.from_pretrained(folder).eval()
    tok = hf.AutoTokenizer.from_pretrained(folder)
    assert model.config.id2label == dict(enumerate(demo.classes))
    assert len(tok) == model.config.vocab_size  # the added tokens came along
    # HF users preprocess with mh3.data.preprocess, as training did (mh3.json says so).
    enc = tok([data.preprocess(t) for t in raw], padding=True, truncation=True, return_tensors="pt")
    with torch.no_grad():
        theirs = torch.softmax(model(**enc).logits, -1).numpy()
    diff = float(np.abs(theirs - ours).max())
    assert diff <= 1e-4, diff
    # The recipe's per-example test predictions are the same probabilities, by example index.
    lines = (whole / "run0" / "predictions_test.csv").read_text().splitlines()
    assert lines[0].split(",")[:4] == ["index", "id", "label", "predicted"]
    written = np.array([[float(x) for x in line.split(",")[4:]] for line in lines[1:]])
    np.testing.assert_allclose(written, ours, atol=1e-5)


def test_event_files_hold_lr_grad_norm_and_the_ce_and_kd_parts(whole):
    workdir, _ = whole
    tags = scalars(workdir / "run0" / "tb")
    for key in ("loss", "loss_ce", "loss_kd", "learning_rate", "grad_norm", "examples_per_s"):
        assert f"train/{key}" in tags, sorted(tags)
    assert "val/f1_weighted" in tags and "val/loss" in tags
    steps = [s for s, _ in tags["train/loss"]]
    assert steps == sorted(steps) and len(steps) >= 2
    assert all(v > 0 and np.isfinite(v) for _, v in tags["train/grad_norm"])
    assert all(v >= 0 for _, v in tags["train/loss_kd"])
    # The logged rate is the run's optax schedule at each step (smoke: 1 warm-up step, then a
    # linear decay to 0 at the last step).
    config = json.loads((workdir / "config.json").read_text())
    total = config["train"]["num_steps"]
    rate = optim.schedule(ml_collections.ConfigDict(config["optim"]), total)
    for step, value in tags["train/learning_rate"]:
        assert value == pytest.approx(float(rate(step - 1)), rel=1e-6, abs=1e-12), step
    # loss = ce_weight * CE + kd_weight * KD, step by step.
    kd = config["kd"]
    parts = zip(tags["train/loss"], tags["train/loss_ce"], tags["train/loss_kd"], strict=True)
    for (_, loss), (_, ce), (_, kl) in parts:
        assert loss == pytest.approx(kd["ce_weight"] * ce + kd["kd_weight"] * kl, rel=1e-5)
    same_as_jsonl(tags, workdir / "run0" / "metrics.jsonl")
    # A teacher stage writes its own (no KD parts: it trains on plain cross-entropy).
    teacher = scalars(workdir / "teachers" / "text" / "tb")
    assert {"train/loss", "train/learning_rate", "train/grad_norm"} <= set(teacher)
    assert "train/loss_kd" not in teacher
    same_as_jsonl(teacher, workdir / "teachers" / "text" / "metrics.jsonl")


def test_every_workdir_has_its_own_log_and_output_is_plain_lines(whole):
    workdir, done = whole
    student_log = (workdir / "log.txt").read_text()
    teacher_log = (workdir / "teachers" / "text" / "log.txt").read_text()
    assert "stage teacher_text in" in teacher_log and "stage teacher_text in" not in student_log
    # The student's file paused while its teachers ran, and continued after.
    assert "stage student in" in student_log and "student stage 5/5" in student_log
    assert "train run0: 3/3 step (100%)" in student_log
    assert "train text: 3/3 step (100%)" in teacher_log
    # Output to a pipe: plain lines, no carriage returns, and one line per pipeline step.
    assert "\r" not in done.stderr and "\r" not in done.stdout
    assert "predict: " in done.stderr  # the soft-label pass has its progress line
    lines = [line for line in done.stdout.splitlines() if line.startswith("student stage")]
    assert lines[0].startswith("student stage 1/5 teacher text") and lines[0].endswith("running")
    assert lines[1].startswith("student stage 1/5 teacher text") and "done in" in lines[1]
    assert any(x.startswith("student stage 2/5 soft labels of text") for x in lines)
    assert any(x.startswith("student stage 4/5 soft labels of emotion") for x in lines)
    assert lines[-1].startswith("student stage 5/5 student run 0") and "done in" in lines[-1]


def test_killed_pipeline_resumes_to_the_same_report(tiny_bert, smoke_students, tmp_path):
    """The session's smoke student (a text teacher, 2 runs; conftest, run in-process) run
    again through launch.py, killed (SIGKILL) once, then rerun: the same results.csv and
    report.md, and the finished teacher left alone."""
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    # The config that pipeline_args(teachers="text", runs=2) gives.
    done = pathlib.Path(smoke_students["text"])

    killed = tmp_path / "killed"
    args = pipeline_args(tiny_bert, killed, teachers="text", runs=2)
    text_done = killed / "teachers" / "text" / "results.json"
    # One kill (each costs a pipeline start): the text teacher and its soft labels are
    # finished, and the student's first run has logged its epoch (the second is to come).
    assert run_until(args, killed / "run0" / "metrics.jsonl")
    assert text_done.exists() and not (killed / "results.json").exists()
    first = os.path.getmtime(text_done)
    rerun = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert os.path.getmtime(text_done) == first  # the finished teacher was not run again

    expect = (done / "results.csv").read_text()
    assert (killed / "results.csv").read_text() == expect
    lines = expect.splitlines()
    assert lines[0].startswith("run,seed,model,split,accuracy,f1_macro,f1_weighted,f1_micro")
    assert [line.split(",")[:3] for line in lines[1:] if ",test," in line] == [
        ["0", "0", "text"], ["0", "0", "student"], ["1", "1", "student"],
    ]  # fmt: skip
    report = (killed / "report.md").read_text()
    assert report == (done / "report.md").read_text().replace(str(done), str(killed))
    assert "SYNTHETIC" in report and "| student | 2 |" in report


def test_teachers_are_trained_once_and_shared_by_the_student_runs(
    tiny_bert, smoke_students, tmp_path
):
    from mh3 import stages

    # The session's finished smoke student (a text teacher, 2 runs; conftest), copied: the
    # report and comparison tests read the original. Its config is `smoke_student_config(runs=2)`.
    done = tmp_path / "a"
    shutil.copytree(smoke_students["text"], done)
    assert sorted(p.name for p in (done / "teachers").iterdir()) == ["text"]
    rows = list(csv.DictReader(open(done / "results.csv")))
    assert [(r["model"], r["seed"]) for r in rows if r["split"] == "test"] == [
        ("text", "0"), ("student", "0"), ("student", "1"),
    ]  # fmt: skip
    results = json.loads((done / "results.json").read_text())
    assert results["test"]["runs"] == 2 and results["std_ddof"] == 1
    assert "ddof=1" in (done / "report.md").read_text()
    # Two more runs keep the finished ones (each run is bound to its seed, not the run count).
    stamps = [os.path.getmtime(done / f"run{r}" / "run.json") for r in (0, 1)]
    stages.run_stage(smoke_student_config(tiny_bert, runs=3), str(done))
    assert stamps == [os.path.getmtime(done / f"run{r}" / "run.json") for r in (0, 1)]
    assert (done / "run2" / "model" / "mh3.json").exists()
    rows = list(csv.DictReader(open(done / "results.csv")))
    assert [r["seed"] for r in rows if r["split"] == "test" and r["model"] == "student"] == [
        "0", "1", "2"
    ]  # fmt: skip

    # The option for teacher variance: every run trains its own teacher with seed + run.
    config = smoke_student_config(tiny_bert, runs=2, retrain_teachers=True)
    stages.run_stage(config, str(tmp_path / "b"))
    seeds = [
        json.loads((tmp_path / "b" / "teachers" / f"text-run{r}" / "config.json").read_text())
        for r in (0, 1)
    ]
    assert [s["seed"] for s in seeds] == [0, 1]


def test_a_rerun_reports_every_stage_cached(tiny_bert, whole):
    # Last in this file: it rewrites this workdir's report and adds to its logs, which the
    # tests above read.
    workdir, _ = whole
    os.remove(workdir / "results.json")  # only the report is redone: the rest is read back
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    args = pipeline_args(tiny_bert, workdir)
    again = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    lines = [x for x in again.stdout.splitlines() if x.startswith("student stage")]
    assert len(lines) == 5 and all(": cached (" in x for x in lines), lines
