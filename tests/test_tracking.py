"""Watching a run (issue #15): TensorBoard event files, metrics.jsonl, log files, progress."""

import json
import logging as pylogging
import os
import subprocess
import sys

import ml_collections
import numpy as np
import pytest
from conftest import ROOT

from mh3.train import optim, tracking


def scalars(tb_dir) -> dict[str, list[tuple[int, float]]]:
    """{tag: [(step, value)]} of the event files in `tb_dir`, read by TensorBoard's own reader
    (which also applies the resume markers)."""
    from tensorboard.backend.event_processing import event_accumulator

    acc = event_accumulator.EventAccumulator(str(tb_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return {t: [(e.step, e.value) for e in acc.Scalars(t)] for t in acc.Tags()["scalars"]}


def records(path) -> list[dict]:
    return [json.loads(line) for line in open(path)]


def same_as_jsonl(tags: dict, path) -> None:
    """Every TensorBoard scalar is in metrics.jsonl under the same split, key and step."""
    by_place = {(r["split"], r["step"]): r for r in records(path)}
    for tag, points in tags.items():
        split, key = tag.split("/", 1)
        for step, value in points:
            assert by_place[(split, step)][key] == pytest.approx(value, rel=1e-6, abs=1e-6), tag


@pytest.fixture(scope="module")
def pipeline(tiny_bert, tmp_path_factory):
    """A smoke student (a text teacher, the tiny BERT, a few steps) run as a user runs it, with
    its output going to pipes, not a terminal."""
    workdir = tmp_path_factory.mktemp("tracking") / "student"
    args = [
        sys.executable,
        os.path.join(ROOT, "launch.py"),
        f"--config=configs/student.py:teachers=text,smoke,model={tiny_bert},text_model={tiny_bert}",
        f"--workdir={workdir}",
        "--config.data.bucketing=false",
        "--config.teacher_text.data.bucketing=false",
    ]
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    done = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return workdir, done, args


def test_student_event_files_hold_lr_grad_norm_and_the_ce_and_kd_parts(pipeline):
    workdir, _, _ = pipeline
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


def test_every_workdir_has_its_own_log_and_output_is_plain_lines(pipeline):
    workdir, done, _ = pipeline
    student_log = (workdir / "log.txt").read_text()
    teacher_log = (workdir / "teachers" / "text" / "log.txt").read_text()
    assert "stage teacher_text in" in teacher_log and "stage teacher_text in" not in student_log
    # The student's file paused while its teacher ran, and continued after.
    assert "stage student in" in student_log and "student stage 3/3" in student_log
    assert "train run0: 3/3 step (100%)" in student_log
    assert "train text: 3/3 step (100%)" in teacher_log
    # Output to a pipe: plain lines, no carriage returns, and one line per pipeline step.
    assert "\r" not in done.stderr and "\r" not in done.stdout
    assert "predict: " in done.stderr  # the soft-label pass has its progress line
    lines = [line for line in done.stdout.splitlines() if line.startswith("student stage")]
    assert lines[0].startswith("student stage 1/3 teacher text") and lines[0].endswith("running")
    assert lines[1].startswith("student stage 1/3 teacher text") and "done in" in lines[1]
    assert any(x.startswith("student stage 2/3 soft labels of text") for x in lines)
    assert lines[-1].startswith("student stage 3/3 student run 0") and "done in" in lines[-1]


def test_a_rerun_reports_every_stage_cached(pipeline):
    workdir, _, args = pipeline
    os.remove(workdir / "results.json")  # only the report is redone: the rest is read back
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    again = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    lines = [x for x in again.stdout.splitlines() if x.startswith("student stage")]
    assert len(lines) == 3 and all(": cached (" in x for x in lines), lines


def test_resumed_tracker_drops_what_came_after_the_restored_step(tmp_path):
    tracker = tracking.Tracker(str(tmp_path), 0)
    for step in (1, 2, 3, 4):
        tracker.write({"step": step, "epoch": 0, "split": "train", "loss": float(step)})
    tracker.write({"step": 4, "epoch": 0, "split": "val", "f1": 0.5, "matrix": [[1]], "x": None})
    tracker.close()
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 5, "ep')  # a line cut short by a kill
    tracker = tracking.Tracker(str(tmp_path), 2)  # the run restarts from step 2
    tracker.write({"step": 3, "epoch": 0, "split": "train", "loss": 30.0})
    tracker.close()
    assert [(r["step"], r["loss"]) for r in records(tmp_path / "metrics.jsonl")] == [
        (1, 1.0), (2, 2.0), (3, 30.0),
    ]  # fmt: skip
    tags = scalars(tmp_path / "tb")
    assert tags["train/loss"] == [(1, 1.0), (2, 2.0), (3, 30.0)]
    assert not tags.get("val/f1")  # step 4 came after the restored step: purged


def test_learning_rate_follows_the_schedule_and_accumulation():
    cfg = optim.default_config()
    cfg.update(schedule="warmup_linear", warmup_steps=2, learning_rate=1.0, accumulate_steps=2)
    schedule = optim.schedule(cfg, 6)  # 12 steps, 6 updates
    rate = tracking.step_rate(schedule, cfg.accumulate_steps)
    # Steps 1-2 make update 1 (count 0), steps 3-4 update 2, ...
    assert [rate(s) for s in range(1, 13)] == [float(schedule(c)) for c in np.arange(12) // 2]


def test_plain_progress_lines_without_carriage_returns(monkeypatch, caplog):
    clock = iter(float(t) for t in range(0, 10_000, 3))
    monkeypatch.setattr(tracking.time, "monotonic", lambda: next(clock))
    caplog.set_level(pylogging.INFO)
    bar = tracking.progress(100, "train x", "step")  # pytest's stderr is not a terminal
    assert isinstance(bar, tracking._Lines)
    bar.set_postfix(loss="0.5")
    for _ in range(100):
        bar.update(1)
    bar.close()
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("train x:")]
    # One line per 10% at most (never within 5 s of the last), and a last one at the end.
    assert 5 <= len(lines) <= 11 and lines[-1].startswith("train x: 100/100 step (100%)")
    assert "loss=0.5" in lines[-1] and not any("\r" in x for x in lines)


def test_nested_log_files_pause_the_outer_one(tmp_path):
    outer, inner = tmp_path / "outer", tmp_path / "inner"
    outer.mkdir(), inner.mkdir()
    log = pylogging.getLogger("mh3-test")
    log.setLevel(pylogging.INFO)
    with tracking.log_file(str(outer)):
        log.info("outer before")
        with tracking.log_file(str(inner)):
            log.info("inner only")
        log.info("outer after")
    log.info("nowhere")
    assert "inner only" in (inner / "log.txt").read_text()
    text = (outer / "log.txt").read_text()
    assert "outer before" in text and "outer after" in text
    assert "inner only" not in text and "nowhere" not in text
