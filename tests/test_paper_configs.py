"""protocol=paper takes the paper's settings (issue #13): every student row of supplement Table
A3 and every teacher row, read straight from SPEC.md so a typo in the configs cannot hide."""

import os
import re

import pytest
from conftest import ROOT

from configs import student, teacher_audio, teacher_emotion, teacher_text

SPEC = os.path.join(os.path.dirname(ROOT), "shared", "SPEC.md")
DATASETS = {"TwitSuicide": "twitsuicide", "DEPTWEET": "deptweet", "IdenDep": "idendep",
            "SDCNL": "sdcnl"}  # fmt: skip
COMBOS = {"T+E+A": "text+emotion+audio", "T+E": "text+emotion", "T+A": "text+audio",
          "T only": "text"}  # fmt: skip


@pytest.fixture(scope="module")
def spec():
    if not os.path.exists(SPEC):
        pytest.skip("../shared/SPEC.md is not here")
    return open(SPEC).read()


def _table_a3(spec: str) -> dict:
    """{(dataset, teachers): (dropout, lr, wd, layers, heads, act, epochs)} from SPEC's table."""
    section = spec[spec.index("Table A3") :]
    lines = [ln for ln in section.splitlines() if ln.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    rows = {}
    for line in lines[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        if cells[0] not in COMBOS:
            break
        for name, cell in zip(header[1:], cells[1:], strict=True):
            d, lr, wd, layers, heads, act, epochs = cell.split("/")
            rows[DATASETS[name], COMBOS[cells[0]]] = (
                float(d), float(lr), float(wd), int(layers), int(heads), act, int(epochs)
            )  # fmt: skip
    return rows


def test_every_table_a3_row_reaches_the_student_config(spec):
    rows = _table_a3(spec)
    assert len(rows) == 16
    for (dataset, teachers), row in rows.items():
        config = student.get_config(f"dataset={dataset},teachers={teachers},protocol=paper")
        dropout, lr, wd, layers, heads, act, epochs = row
        got = (
            config.model.hidden_dropout_prob, config.optim.learning_rate,
            config.optim.weight_decay, config.model.num_hidden_layers,
            config.model.num_attention_heads, config.model.hidden_act, config.train.epochs,
        )  # fmt: skip
        assert got == row, (dataset, teachers)
        # The rest of the paper's student recipe (SPEC stage 4).
        assert config.model.name == "bert-base-uncased" and config.data.batch_size == 32
        assert config.optim.name == "adam_l2" and config.optim.schedule == "constant"
        assert config.optim.clip_norm == 0 and config.optim.warmup_steps == 0
        assert config.train.model_choice == "last" and config.kd.reduction == "paper"
        assert config.teachers == teachers
        del dropout, lr, wd, layers, heads, act, epochs


def test_every_teacher_row_reaches_its_config(spec):
    text = re.search(r"Best text teacher.*?:\n(.*?)\n\n", spec, re.S).group(1)
    for name, model, *values in re.findall(
        r"(\w+): (\w+) ([\d.e-]+) ([\d.e-]+) ([\d.e-]+) (\d+) (\d+) (\d+) (\d+)", text
    ):
        dropout, wd, lr, epochs, layers, heads, batch = map(float, values)
        c = teacher_text.get_config(f"dataset={DATASETS[name]},protocol=paper")
        assert (c.model.hidden_dropout_prob, c.optim.weight_decay, c.optim.learning_rate) == (
            dropout, wd, lr,
        ), name  # fmt: skip
        assert (c.train.epochs, c.model.num_hidden_layers, c.model.num_attention_heads) == (
            epochs, layers, heads,
        ), name  # fmt: skip
        assert c.data.batch_size == batch and c.model.hidden_act == "relu"
        s = student.get_config(f"dataset={DATASETS[name]},teachers=text,protocol=paper")
        expect_model = {
            "BERT": "bert-base-uncased",
            "MentalBERT": "mental/mental-bert-base-uncased",
        }
        assert s.teacher_text.model.name == expect_model[model], name

    emotion = re.search(r"Emotion teacher:.*?Best \(dataset: dropout, wd, lr, layers, hidden\): "
                        r"(.*?)\n\n", spec, re.S).group(1)  # fmt: skip
    rows = re.findall(r"(\w+) ([\d.e-]+) ([\d.e-]+) ([\d.e-]+) (\d+) (\d+)", emotion)
    assert len(rows) == 4
    for name, dropout, wd, lr, layers, hidden in rows:
        c = teacher_emotion.get_config(f"dataset={DATASETS[name]},protocol=paper")
        assert (c.model.dropout, c.optim.weight_decay, c.optim.learning_rate) == (
            float(dropout), float(wd), float(lr),
        ), name  # fmt: skip
        assert (c.model.num_layers, c.model.hidden_size) == (int(layers), int(hidden)), name
        # SPEC addendum: batch 64, TwitSuicide 128.
        assert c.data.batch_size == (128 if name == "TwitSuicide" else 64), name

    audio = re.search(r"Audio teacher:.*?Best \(dataset: dropout, lr, layers, heads, patience, "
                      r"factor\):\n(.*?)\n\n", spec, re.S).group(1)  # fmt: skip
    rows = re.findall(r"(\w+) ([\d.e-]+) ([\d.e-]+) (\d+) (\d+) (\d+) (\d*\.\d+|\d+)", audio)
    assert len(rows) == 4
    for name, dropout, lr, layers, heads, patience, factor in rows:
        c = student.get_config(f"dataset={DATASETS[name]},protocol=paper").teacher_audio
        assert c.model.name == teacher_audio.AST_AUDIOSET and c.data.batch_size == 32
        assert (c.model.hidden_dropout_prob, c.optim.learning_rate) == (
            float(dropout), float(lr),
        ), name  # fmt: skip
        assert (c.model.num_hidden_layers, c.model.num_attention_heads) == (
            int(layers), int(heads),
        ), name  # fmt: skip
        assert (c.optim.plateau_patience, c.optim.plateau_factor) == (
            int(patience), float(factor),
        ), name  # fmt: skip


def test_twitsuicide_is_a_registry_entry_with_three_classes(tmp_path):
    from configs import common
    from mh3 import data

    rows = ["text,label"] + [f"post number {i} about my day,{i % 3}" for i in range(60)]
    (tmp_path / "train.csv").write_text("\n".join(rows) + "\n")
    cfg = common.data_config("twitsuicide", "clean", smoke=False)
    cfg.path = str(tmp_path)
    ds = data.load_dataset(cfg)
    assert ds.classes == ("safe_to_ignore", "possibly_concerning", "strongly_concerning")
    summary = ds.summary()
    assert summary["train"] + summary["val"] + summary["test"] == 60 and summary["test"] > 0
