"""The one training recipe (mh3.train.recipe): the drift bugs of issue #12 stay fixed for every
stage because every stage goes through here.

- the schedule counts optimizer updates, so gradient accumulation shortens it;
- `optim.plateau_patience` reaches the state (the emotion stages used to drop it);
- only process 0 writes the saved model, the confusion PNGs and the predictions;
- head initialisation, vocabulary growth and dropout draw from different keys.
"""

import json

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from test_train import Tiny, make_batches

from configs import teacher_text
from mh3 import data, files
from mh3.train import finetune, optim, parallel, recipe


def _config(**optim_kw):
    config = ml_collections.ConfigDict()
    config.seed = 0
    config.data = ml_collections.ConfigDict(dict(batch_size=8, eval_batch_size=8))
    config.optim = optim.default_config()
    config.optim.update(learning_rate=1e-2, **optim_kw)
    config.train = ml_collections.ConfigDict(
        dict(
            epochs=2, num_steps=0, model_choice="last", select_metric="loss",
            early_stop_patience=0, checkpoint_every_steps=0, checkpoint_min_secs=0.0,
            max_to_keep=2, log_every_steps=1,
        )
    )  # fmt: skip
    return config


def _task(saved: list) -> recipe.Task:
    model = Tiny(dropout=0.0)
    params = model.init(jax.random.PRNGKey(0), {"x": jnp.zeros((1, 5))})["params"]

    def batches(split, *, train, epoch=0):
        seed = {"train": 7, "val": 8, "test": 9}[split]
        for i, b in enumerate(make_batches(seed, epoch if train else 0, n_batches=4)):
            yield dict(b, index=np.arange(8, dtype=np.int32) + 8 * i)

    def save(folder, trained):
        saved.append(folder)
        files.write_json(f"{folder}/weights.json", {"n": len(jax.tree.leaves(trained))})

    return recipe.Task(
        model=model, params=params, batches=batches, sizes={"train": 32, "val": 32, "test": 32},
        classes=["a", "b", "c"], save=save, ids=[f"e{i}" for i in range(32)], title="tiny",
    )  # fmt: skip


def test_accumulation_shortens_the_schedule_to_the_updates_made(tmp_path):
    config = _config(schedule="warmup_linear", warmup_steps=1, accumulate_steps=2)
    final, results = recipe.train(config, str(tmp_path), _task([]), rng=jax.random.PRNGKey(1))
    plan = results["schedule"]
    assert plan["total_steps"] == 8 and plan["updates"] == 4
    # MultiSteps made 4 updates, and the decaying schedule reached its end (lr 0) at the last.
    inner_count = int(jax.tree.leaves(final.opt_state.inner_opt_state)[0])
    assert inner_count == 4
    lr = optim.schedule(config.optim, plan["updates"])
    assert float(lr(inner_count)) == 0.0 and float(lr(inner_count - 1)) > 0.0


def test_plateau_patience_reaches_the_state(tmp_path):
    final, results = recipe.train(
        _config(plateau_patience=1, plateau_factor=0.5),
        str(tmp_path),
        _task([]),
        rng=jax.random.PRNGKey(1),
    )
    assert results["schedule"]["plateau"] and final.plateau is not None
    assert final.plateau_tx is not None


def test_only_process_0_writes_the_model_and_reports(tmp_path, monkeypatch):
    saved = []
    _, results = recipe.train(
        _config(), str(tmp_path / "p0"), _task(saved), rng=jax.random.PRNGKey(1)
    )
    assert saved and (tmp_path / "p0" / "model" / "weights.json").exists()
    assert (tmp_path / "p0" / "predictions_test.csv").exists()
    lines = (tmp_path / "p0" / "predictions_test.csv").read_text().splitlines()
    assert lines[0] == "index,id,label,predicted,p_a,p_b,p_c" and len(lines) == 1 + 24
    assert lines[1].split(",")[:2] == ["0", "e0"]  # padding rows (mask 0) are left out

    monkeypatch.setattr(parallel, "process_index", lambda: 1)
    saved.clear()
    _, results = recipe.train(
        _config(), str(tmp_path / "p1"), _task(saved), rng=jax.random.PRNGKey(1)
    )
    assert saved == [] and not (tmp_path / "p1" / "model").exists()
    assert not list((tmp_path / "p1").glob("*.png"))
    assert not (tmp_path / "p1" / "predictions_test.csv").exists()
    assert results["test"]["accuracy"] >= 0  # every process still computes the numbers


def test_keys_by_purpose_are_distinct_and_used_by_the_text_task(tiny_bert):
    keys = recipe.keys(0)
    bits = [tuple(np.asarray(jax.random.key_data(k)).ravel()) for k in keys.values()]
    assert len(set(bits)) == len(recipe.PURPOSES)
    assert bits == [
        tuple(np.asarray(jax.random.key_data(k)).ravel()) for k in recipe.keys(0).values()
    ]

    config = teacher_text.get_config("smoke")
    config.model.name = config.data.tokenizer = tiny_bert
    prep = data.prepare(config.data)
    task = finetune.text_task(config, prep, keys)
    head = np.asarray(task.params["classifier"]["kernel"])
    rows = np.asarray(task.params["embeddings"]["word_embeddings"]["embedding"])[
        -prep.tokenizer.num_added :
    ]
    # Same seed, same purpose: same draws; the head and the new rows come from different keys.
    again = finetune.text_task(config, prep, recipe.keys(0))
    np.testing.assert_array_equal(head, np.asarray(again.params["classifier"]["kernel"]))
    other = finetune.text_task(config, prep, dict(keys, vocab=keys["init"]))
    other_rows = np.asarray(other.params["embeddings"]["word_embeddings"]["embedding"])
    assert not np.array_equal(rows, other_rows[-prep.tokenizer.num_added :])


def test_epoch_hook_sees_every_epoch_and_can_stop_a_run(tmp_path):
    seen = []

    def hook(workdir, epoch, record):
        seen.append((workdir, epoch, round(record["loss"], 6)))
        if epoch == 1:
            raise KeyboardInterrupt("pruned")  # what a search's pruner does

    config = _config()
    config.train.epochs = 3
    with recipe.epoch_hook(hook):
        try:
            recipe.train(config, str(tmp_path), _task([]), rng=jax.random.PRNGKey(1))
        except KeyboardInterrupt:
            pass
    assert [(w, e) for w, e, _ in seen] == [(str(tmp_path), 0), (str(tmp_path), 1)]
    log = [json.loads(x) for x in open(tmp_path / "metrics.jsonl")]
    assert [round(r["loss"], 6) for r in log if r["split"] == "val"] == [x for *_, x in seen]
    # Outside the block nothing is called.
    recipe.train(_config(), str(tmp_path / "b"), _task([]), rng=jax.random.PRNGKey(1))
    assert len(seen) == 2
