"""Checkpoints are bound to the config that made them: a rerun with another config never resumes.

Issue #16, case 1: rerunning a finished or killed workdir with another seed, learning rate or
model shape used to resume the old checkpoint (same params under the new config's name) or crash
on a structure mismatch. Each rerun here must give what a fresh workdir gives.
"""

import json
import logging

import pytest

from configs import teacher_text
from mh3 import stages
from mh3.train import checkpoints


def _config(tiny_bert, **overrides):
    config = teacher_text.get_config("smoke")
    config.model.name = config.data.tokenizer = tiny_bert
    config.data.bucketing = False  # one batch shape: fewer compiles
    for key, value in overrides.items():
        block, _, leaf = key.rpartition(".")
        (config[block] if block else config)[leaf] = value
    return config


def _params(workdir) -> bytes:
    return (workdir / "model" / "model.safetensors").read_bytes()


@pytest.fixture(scope="module")
def first(tiny_bert, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("binding") / "x"
    stages.run_stage(_config(tiny_bert), str(workdir))
    return workdir, _params(workdir)


def test_a_changed_seed_trains_afresh_and_keeps_the_old_checkpoints_aside(
    tiny_bert, first, tmp_path, caplog
):
    workdir, params0 = first
    with caplog.at_level(logging.WARNING):
        stages.run_stage(_config(tiny_bert, seed=7), str(workdir))
    assert "not resuming" in caplog.text and "seed 0 -> 7" in caplog.text
    fresh = tmp_path / "fresh"
    stages.run_stage(_config(tiny_bert, seed=7), str(fresh))
    assert _params(workdir) != params0
    assert _params(workdir) == _params(fresh)  # exactly what a fresh workdir gives
    old = json.loads((workdir / checkpoints.SUPERSEDED / checkpoints.BINDING).read_text())
    assert old["fingerprint"]["seed"] == 0  # the first run's checkpoints are kept, not lost
    log = [json.loads(x) for x in open(workdir / "metrics.jsonl")]
    assert [r["step"] for r in log] == [
        json.loads(x)["step"] for x in open(fresh / "metrics.jsonl")
    ]


def test_a_changed_shape_trains_afresh(tiny_bert, first):
    workdir, _ = first
    # A shape change used to crash in Orbax ("Structure mismatch"); now it simply starts over.
    results = stages.run_stage(
        _config(tiny_bert, seed=7, **{"model.num_hidden_layers": 2}), str(workdir)
    )
    assert results["test"]["n"] > 0
    bound = json.loads((workdir / "checkpoints" / checkpoints.BINDING).read_text())
    assert bound["fingerprint"]["model.num_hidden_layers"] == 2


def test_logging_settings_do_not_unbind_a_checkpoint():
    base = _config("m")
    other = _config("m", **{"train.log_every_steps": 5, "train.max_to_keep": 9})
    assert checkpoints.fingerprint(base) == checkpoints.fingerprint(other)
    assert checkpoints.fingerprint(base) != checkpoints.fingerprint(base, teacher_logits="ab")
    message = checkpoints.differences(
        checkpoints.fingerprint(base), checkpoints.fingerprint(_config("m", seed=3))
    )
    assert message == "seed 0 -> 3"


def test_settings_that_do_not_change_training_are_ignored_in_nested_blocks_too():
    from configs import student

    config = student.get_config("smoke")
    before = checkpoints.fingerprint(config)
    config.teacher_text.train.log_every_steps = 7  # a teacher's block inside the student's
    config.teacher_audio.tts.tts.workers = 3  # speech is the same with any worker count
    assert checkpoints.fingerprint(config) == before
    config.teacher_audio.tts.tts.max_words = 20  # this one changes the audio
    assert checkpoints.differences(before, checkpoints.fingerprint(config)) == (
        "teacher_audio.tts.tts.max_words 45 -> 20"
    )
