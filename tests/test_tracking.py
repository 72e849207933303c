"""Watching a run (issue #15): TensorBoard event files, metrics.jsonl, log files, progress.

What a finished smoke pipeline wrote and printed (event files, log files, stage lines) is checked
in test_student.py, on the one pipeline that file runs.
"""

import json
import logging as pylogging

import numpy as np

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
