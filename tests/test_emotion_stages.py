"""The emotion stages: the table stays frozen in a real training step; both stages run through
launch.py in smoke mode (the teacher pulls the embedding stage) and on the shared recipe
(schedule by updates, plateau scheduler, process 0 alone writes); the teacher's saved model
predicts what its own evaluation did."""

import csv
import json
import os
import subprocess
import sys

import jax
import numpy as np
import optax
import pytest
from conftest import ROOT

import mh3
from mh3 import data, files
from mh3.distill import teachers
from mh3.models import emotion
from mh3.stages import emotion_embeddings, teacher_emotion
from mh3.train import checkpoints, optim, parallel, recipe, steps
from mh3.train import state as state_lib
from mh3.weights import mmemog


def launch(*args):
    env = dict(os.environ, HF_HUB_OFFLINE="1", JAX_PLATFORMS="cpu")
    return subprocess.run(
        [sys.executable, os.path.join(ROOT, "launch.py"), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_table_is_frozen_through_the_training_core():
    model = emotion.EmotionMLP(
        num_labels=3, vocab_size=40, embed_dim=8, max_length=6, num_layers=2, hidden_size=16
    )
    table = np.random.RandomState(0).uniform(size=(40, 8)).astype(np.float32)
    variables = {"params": emotion.init_params(model, 0), emotion.TABLE: {"embedding": table}}
    config = optim.default_config()
    config.learning_rate, config.weight_decay = 1e-2, 0.1  # L2 would move an unfrozen table
    tx = teacher_emotion.frozen_table_tx(optim.make(config, 10))
    state = state_lib.create(model.apply, variables, tx, jax.random.PRNGKey(0))
    n = parallel.device_count()
    rng = np.random.RandomState(1)
    batch = {
        "input_ids": rng.randint(0, 40, size=(2 * n, 6)).astype(np.int32),
        "label": rng.randint(0, 3, size=2 * n).astype(np.int32),
        "mask": np.ones(2 * n, np.int32),
    }
    p_train = parallel.pmap(lambda s, b: steps.train_step(s, b, loss_fn=teacher_emotion.table_loss))
    pstate, _ = p_train(parallel.replicate(state), parallel.shard(batch))
    after = parallel.unreplicate(pstate)
    np.testing.assert_array_equal(after.params[emotion.TABLE]["embedding"], table)
    moved = jax.tree.map(
        lambda a, b: float(np.abs(np.asarray(a) - np.asarray(b)).max()),
        after.params["params"],
        variables["params"],
    )
    assert all(v > 0 for v in jax.tree.leaves(moved))
    assert int(after.step) == 1


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("teacher_emotion"))
    # One batch shape (the embedding stage takes this data block too), as in every emotion run
    # below and in test_student's pipeline: they share compiled programs (conftest's cache).
    proc = launch(
        "--config=configs/teacher_emotion.py:smoke", f"--workdir={workdir}",
        "--config.data.bucketing=false",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return workdir


def test_teacher_pulls_embeddings_and_saves_a_model(teacher_run):
    emb_dir = os.path.join(teacher_run, "emotion_embeddings")
    with open(os.path.join(emb_dir, "results.json")) as f:
        emb = json.load(f)
    assert emb["stage"] == "emotion_embeddings"
    assert emb["emotion"]["labels"] == list(
        ("anger", "disgust", "fear", "sadness", "surprise", "negative", "other")
    )
    assert {"accuracy", "f1_macro", "f1_weighted", "loss"} <= set(emb["val"]) & set(emb["test"])
    assert emb["epochs"] == len(emb["history"]) == 2 and "model" not in emb
    assert not os.path.exists(os.path.join(emb_dir, "model"))  # a table, not a classifier
    vocab_map, weights = mmemog.load(emb["table"])
    assert weights.shape == (len(vocab_map), 32) == tuple(emb["table_shape"])

    with open(os.path.join(teacher_run, "results.json")) as f:
        res = json.load(f)
    assert res["stage"] == "teacher_emotion" and res["table"] == emb["table"]
    for split in ("val", "test"):
        assert 0 <= res[split]["f1_weighted"] <= 1 and "accuracy" in res[split]
    assert res["data"]["classes"] == ["neutral", "stress", "low_mood"]
    assert res["epochs"] == len(res["history"]) == 2 and res["mmemog_rows"] == len(vocab_map)
    # One saved-model format: model/ only, no params/ or tokenizer/ export beside it.
    assert res["model"] == os.path.join(teacher_run, "model") and "params" not in res
    assert not {"params", "tokenizer"} & set(os.listdir(teacher_run))
    teacher = mh3.load(res["model"])
    assert teacher.classes == tuple(res["data"]["classes"]) and teacher.max_len == res["max_len"]
    assert teacher.meta["protocol"] == "clean" and teacher.meta["kind"] == "emotion"
    # MM-EMOG rows sit in the teacher's table at the tokenizer ids of their pieces
    tok = teacher.tokenizer
    piece = next(t for t in vocab_map if t not in tok.hf.all_special_tokens)
    row = tok.hf.convert_tokens_to_ids(piece)
    np.testing.assert_array_equal(
        teacher.variables[emotion.TABLE]["embedding"][row], weights[vocab_map[piece]]
    )
    assert teacher.variables[emotion.TABLE]["embedding"].shape == tuple(res["table_shape"])


def test_saved_teacher_predicts_its_held_out_probabilities(teacher_run):
    """mh3.load(model/).predict(raw test texts) equals the probabilities of the stage's own
    test evaluation (predictions_test.csv), and the student's call gives the same logits."""
    with open(os.path.join(teacher_run, "predictions_test.csv")) as f:
        rows = list(csv.DictReader(f))
    res = files.read_json(os.path.join(teacher_run, "results.json"))
    classes = res["data"]["classes"]
    ds = data.load_dataset(teacher_emotion_config().data)
    assert len(rows) == res["data"]["test"] > 0
    raw = [ds.examples[int(r["index"])].raw for r in rows]
    assert [ds.examples[int(r["index"])].id for r in rows] == [r["id"] for r in rows]
    want = np.array([[float(r[f"p_{c}"]) for c in classes] for r in rows])
    teacher = mh3.load(res["model"])
    np.testing.assert_allclose(teacher.predict(raw), want, atol=1e-5)

    logits = teachers.teacher_logits(res, ds, batch_size=8)
    assert logits.shape == (len(ds.examples), len(classes))
    index = [int(r["index"]) for r in rows]
    np.testing.assert_allclose(logits[index], teacher.logits(raw), rtol=1e-6, atol=1e-6)


def teacher_emotion_config(**overrides):
    from configs import teacher_emotion as teacher_cfg

    config = teacher_cfg.get_config("smoke")
    config.data.bucketing = False  # as the module's launch.py run
    for key, value in overrides.items():
        block, _, name = key.rpartition(".")
        (config[block] if block else config)[name] = value
    return config


@pytest.fixture
def spy_train(monkeypatch):
    """Records the (final state, results) of every recipe.train call."""
    calls = []
    original = recipe.train

    def spy(*args, **kwargs):
        calls.append(original(*args, **kwargs))
        return calls[-1]

    monkeypatch.setattr(recipe, "train", spy)
    return calls


def test_teacher_schedule_counts_updates_with_accumulation(
    teacher_run, tmp_path, monkeypatch, spy_train
):
    """accumulate_steps=2: the schedule is sized by optimizer updates (half the steps), so the
    warm-up/decay schedule the optimizer holds ends at 0 exactly when the last update is made."""
    made = []
    original = optim.schedule
    monkeypatch.setattr(optim, "schedule", lambda *a: made.append(original(*a)) or made[-1])
    config = teacher_emotion_config(
        table=os.path.join(teacher_run, "emotion_embeddings", "table.npz"),
        **{"optim.accumulate_steps": 2, "optim.schedule": "warmup_linear"},
        **{"optim.warmup_ratio": 0.25, "optim.learning_rate": 1e-3},
    )
    results = teacher_emotion.run(config, str(tmp_path))
    plan = results["schedule"]
    assert plan["total_steps"] == 2 * plan["steps_per_epoch"] == 12  # 2 epochs of 48 / 8
    assert plan["updates"] == plan["total_steps"] // 2 == 6
    ((state, _),), (lr,) = spy_train, made
    # MultiSteps made `updates` updates; the inner optimizer's step counters say so too.
    assert int(optax.tree_utils.tree_get(state.opt_state, "gradient_step")) == 6
    counts = optax.tree_utils.tree_get_all_with_path(state.opt_state, "count")
    assert counts and {int(c) for _, c in counts} == {6}
    assert float(lr(5)) > 0 and float(lr(6)) == 0.0  # the last update's rate, then the end


def test_teacher_plateau_scheduler_reduces_the_rate(teacher_run, tmp_path, spy_train):
    """plateau_patience=1 reaches the trained state: with a zero rate the validation loss
    cannot improve, so after the second epoch optax's rule (torch's would wait one more
    epoch, tests/test_plateau.py) drops the scale by plateau_factor, and the checkpoint (what
    a resumed run continues from) holds it."""
    config = teacher_emotion_config(
        table=os.path.join(teacher_run, "emotion_embeddings", "table.npz"),
        **{"optim.plateau_patience": 1, "optim.plateau_factor": 0.5},
        **{"optim.learning_rate": 0.0, "optim.plateau_rule": "optax"},
    )
    results = teacher_emotion.run(config, str(tmp_path))
    assert results["schedule"]["plateau"] is True
    losses = [h["loss"] for h in results["history"]]
    assert len(losses) == 2 and losses[0] == losses[1]
    ((state, _),) = spy_train
    assert state.plateau is not None and float(state.plateau.scale) == 0.5
    restored, _, _ = checkpoints.Checkpoints(str(tmp_path), max_to_keep=2, keep_best=True).restore(
        state
    )
    assert float(restored.plateau.scale) == 0.5 and int(restored.step) == int(state.step)


def test_only_process_0_writes_the_products(teacher_run, tmp_path, monkeypatch):
    """In a multi-host run (process 1 of 2 here) neither stage writes its model or table."""
    from configs import emotion_embeddings as emb_cfg

    monkeypatch.setattr(parallel, "process_index", lambda: 1)
    monkeypatch.setattr(parallel, "process_count", lambda: 2)
    emb = emb_cfg.get_config("smoke")
    emb.data.bucketing = False
    emb.train.num_steps = 1
    results = emotion_embeddings.run(emb, str(tmp_path / "emb"))
    assert not os.path.exists(results["table"])
    config = teacher_emotion_config(
        table=os.path.join(teacher_run, "emotion_embeddings", "table.npz"),
        **{"train.num_steps": 1},
    )
    results = teacher_emotion.run(config, str(tmp_path / "teacher"))
    assert results["model"] == str(tmp_path / "teacher" / "model")
    assert not os.path.exists(results["model"])
    assert not os.path.exists(results["test"]["predictions"])


def test_bad_lexicon_is_one_line(tmp_path):
    bad = tmp_path / "lexicon.txt"
    bad.write_text("this is not a lexicon\n")
    proc = launch(
        "--config=configs/emotion_embeddings.py:smoke",
        f"--workdir={tmp_path / 'run'}",
        f"--config.emotion.lexicon={bad}",
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("error: ") and "unknown lexicon format" in lines[-1]
    assert "Traceback" not in proc.stderr
