"""Every bad number is refused before any work starts, in one line naming the key (issue #16,
case 2), and undefined metrics are JSON null rather than NaN."""

import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT

from configs import common, student, teacher_audio, teacher_text
from mh3 import data, stages
from mh3.errors import UserError
from mh3.train import metrics

CASES = {
    "train.epochs=0 with num_steps=0": ({"train.epochs": 0, "train.num_steps": 0}, "nothing would"),
    "a negative learning rate": ({"optim.learning_rate": -1.0}, "optim.learning_rate=-1.0"),
    "max_per_split -1": ({"data.max_per_split": -1}, "data.max_per_split=-1"),
    "batch size -8": ({"data.batch_size": -8}, "data.batch_size=-8"),
    "batch size 0": ({"data.batch_size": 0}, "data.batch_size=0"),
    "max_len 0": ({"data.max_len": 0}, "data.max_len=0"),
    "val_fraction 1.5": ({"data.val_fraction": 1.5}, "data.val_fraction=1.5"),
    "unknown select_metric": ({"train.select_metric": "bogus"}, "train.select_metric='bogus'"),
}


@pytest.mark.parametrize("case", CASES)
def test_bad_values_are_refused_before_any_work(case, tmp_path):
    values, words = CASES[case]
    config = teacher_text.get_config("smoke")
    for dotted, value in values.items():
        block, leaf = dotted.split(".")
        config[block][leaf] = value
    with pytest.raises(UserError, match=words.replace("(", r"\(").replace(")", r"\)")):
        stages.run_stage(config, str(tmp_path / "w"))
    assert not (tmp_path / "w").exists()  # refused before the workdir was touched


def test_nested_tts_block_of_the_audio_teacher_is_checked(tmp_path):
    config = teacher_audio.get_config("smoke")
    config.tts.workers = -2
    with pytest.raises(UserError, match=r"config tts.workers=-2 is out of range"):
        stages.run_stage(config, str(tmp_path / "w"))
    assert not (tmp_path / "w").exists()


def test_nested_stage_blocks_are_checked_too(tmp_path):
    config = student.get_config("teachers=text,smoke")
    config.teacher_text.optim.learning_rate = 0.0
    with pytest.raises(UserError, match="config teacher_text.optim.learning_rate=0.0"):
        stages.run_stage(config, str(tmp_path / "w"))


def test_launch_says_one_line_and_exits_2():
    cmd = [sys.executable, "launch.py", "--config=configs/teacher_text.py:smoke",
           "--config.data.batch_size=-8", "--workdir=/nonexistent/never-made"]  # fmt: skip
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == (
        "error: config data.batch_size=-8 is out of range; use an integer >= 1"
    )


def test_one_class_roc_auc_is_null_and_a_one_class_training_split_is_refused(tmp_path):
    out = metrics.classification(np.zeros((4, 1)), np.zeros(4, int), np.ones(4), ["only"])
    assert out["roc_auc"] is None and json.loads(json.dumps(out))["roc_auc"] is None
    rows = ["text,label"] + [f"post {i} about nothing,0" for i in range(20)]
    (tmp_path / "train.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "test.csv").write_text("text,label\nanother post,1\nmore,0\n")
    cfg = common.data_config("csv", "clean", smoke=False)
    cfg.path = str(tmp_path)
    cfg.classes, cfg.label_values = ("calm", "stressed"), ("0", "1")
    with pytest.raises(UserError, match="training split has 1 class"):
        data.check_trainable(data.load_dataset(cfg))
