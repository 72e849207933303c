"""The emotion stages: the table stays frozen in a real training step, and both stages run
through launch.py in smoke mode (the teacher pulls the embedding stage)."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import ROOT

from mh3.models import emotion
from mh3.stages import teacher_emotion
from mh3.train import optim, parallel, steps
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
    proc = launch("--config=configs/teacher_emotion.py:smoke", f"--workdir={workdir}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return workdir


def test_teacher_pulls_embeddings_and_exports(teacher_run):
    emb_dir = os.path.join(teacher_run, "emotion_embeddings")
    with open(os.path.join(emb_dir, "results.json")) as f:
        emb = json.load(f)
    assert emb["stage"] == "emotion_embeddings"
    assert emb["emotion"]["labels"] == list(
        ("anger", "disgust", "fear", "sadness", "surprise", "negative", "other")
    )
    assert {"accuracy", "f1_macro", "f1_weighted"} <= set(emb["val"])
    vocab_map, weights = mmemog.load(emb["table"])
    assert weights.shape == (len(vocab_map), 32) == tuple(emb["table_shape"])

    with open(os.path.join(teacher_run, "results.json")) as f:
        res = json.load(f)
    assert res["stage"] == "teacher_emotion" and res["table"] == emb["table"]
    for split in ("val", "test"):
        assert 0 <= res[split]["f1_weighted"] <= 1 and "accuracy" in res[split]
    assert res["data"]["classes"] == ["neutral", "stress", "low_mood"]
    model, variables, classes = mmemog.load_teacher(res["params"])
    assert classes == tuple(res["data"]["classes"])
    # MM-EMOG rows sit in the teacher's table at the tokenizer ids of their pieces
    from mh3.data import load_tokenizer

    tok = load_tokenizer(res["tokenizer"])
    piece = next(t for t in vocab_map if t not in tok.hf.all_special_tokens)
    row = tok.hf.convert_tokens_to_ids(piece)
    np.testing.assert_array_equal(
        variables[emotion.TABLE]["embedding"][row], weights[vocab_map[piece]]
    )
    ids = tok.hf(["i feel so stressed and sad"], return_tensors="np")["input_ids"]
    logits, out = model.apply(variables, {"input_ids": jnp.asarray(ids, jnp.int32)})
    assert logits.shape == (1, 3) and out["pooled"].shape == (1, model.hidden_size)


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
