"""Training core: pmap equality, the paper's optimizer vs torch, metrics, resume, NaN stop."""

import json
import os
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from sklearn import metrics as skm

from mh3.errors import UserError
from mh3.train import checkpoints, loop, optim, parallel, steps
from mh3.train import metrics as metrics_lib
from mh3.train import state as state_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Tiny(nn.Module):
    """A two-layer classifier over float features `x`, with the mh3 model interface."""

    dropout: float = 0.1

    @nn.compact
    def __call__(self, batch, train=False):
        h = nn.relu(nn.Dense(32)(batch["x"]))
        h = nn.Dropout(self.dropout, deterministic=not train)(h)
        return nn.Dense(3)(h), {"hidden": h}


def train_config(**kw):
    cfg = dict(
        epochs=2,
        num_steps=0,
        model_choice="last",
        select_metric="loss",
        early_stop_patience=0,
        checkpoint_every_steps=0,
        checkpoint_min_secs=0.0,
        max_to_keep=3,
        log_every_steps=1,
    )
    cfg.update(kw)
    return ml_collections.ConfigDict(cfg)


def make_batches(seed, epoch, n_batches=3, size=8, nan_at=None):
    """Deterministic in (seed, epoch); the last two rows of each batch are padding."""
    rng = np.random.default_rng([seed, epoch])
    for i in range(n_batches):
        x = rng.normal(size=(size, 5)).astype(np.float32)
        label = rng.integers(0, 3, size=size).astype(np.int32)
        mask = np.ones(size, np.float32)
        mask[-2:] = 0
        # Padding rows get wild values: they must not move the parameters.
        x[-2:] = 1e3
        if nan_at is not None and epoch * n_batches + i == nan_at:
            x[0] = np.nan
        yield {"x": x, "label": label, "mask": mask}


def new_state(dropout=0.1, lr=1e-2, **optim_kw):
    model = Tiny(dropout=dropout)
    params = model.init(jax.random.PRNGKey(0), {"x": jnp.zeros((1, 5))})["params"]
    o = optim.default_config()
    o.learning_rate = lr
    o.update(optim_kw)
    return state_lib.create(model.apply, params, optim.make(o, 6), jax.random.PRNGKey(1))


def run_fit(workdir, cfg, *, dropout=0.1, nan_at=None, stop_after=None, n_batches=3, **optim_kw):
    consumed = [0]

    def train_batches(epoch):
        for b in make_batches(7, epoch, n_batches=n_batches, nan_at=nan_at):
            if stop_after is not None and consumed[0] == stop_after:
                raise KeyboardInterrupt("simulated kill")
            consumed[0] += 1
            yield b

    return loop.fit(
        new_state(dropout, **optim_kw),
        loss_fn=steps.classification_loss,
        train_batches=train_batches,
        steps_per_epoch=n_batches,
        val_batches=lambda: make_batches(8, 99, n_batches=2),
        train_config=cfg,
        workdir=str(workdir),
        fingerprint=checkpoints.fingerprint(cfg, dropout=dropout, **optim_kw),
        class_names=["a", "b", "c"],
    )


def _flat(params):
    return np.concatenate([np.ravel(x) for x in jax.tree.leaves(params)])


_ONE_DEVICE_SCRIPT = """
import sys, numpy as np
sys.path.insert(0, {root!r}); sys.path.insert(0, {tests!r})
import jax
assert jax.local_device_count() == 1
import test_train
final, _ = test_train.run_fit({workdir!r}, test_train.train_config(), dropout=0.0)
np.save({out!r}, test_train._flat(final.params))
"""


def test_pmap_four_devices_equal_one_device(tmp_path):
    assert parallel.device_count() == 4
    four, _ = run_fit(tmp_path / "four", train_config(), dropout=0.0)
    out = str(tmp_path / "one.npy")
    script = _ONE_DEVICE_SCRIPT.format(
        root=ROOT, tests=os.path.join(ROOT, "tests"), workdir=str(tmp_path / "one"), out=out
    )
    from conftest import xla_flags  # here: the child script imports this module

    env = dict(os.environ, XLA_FLAGS=xla_flags(1))
    subprocess.run([sys.executable, "-c", script], check=True, env=env, cwd=ROOT)
    one = np.load(out)
    assert int(four.step) == 6
    np.testing.assert_allclose(_flat(four.params), one, atol=1e-6, rtol=0)


def test_adam_l2_matches_torch_adam_weight_decay():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    w0 = rng.normal(size=(4, 3)).astype(np.float32)
    grads = [rng.normal(size=(4, 3)).astype(np.float32) for _ in range(3)]
    o = optim.default_config()
    o.update(learning_rate=1e-2, weight_decay=0.1)
    tx = optim.make(o, 3)
    params = {"w": jnp.asarray(w0)}
    opt_state = tx.init(params)
    for g in grads:
        updates, opt_state = tx.update({"w": jnp.asarray(g)}, opt_state, params)
        params = jax.tree.map(lambda p, u: p + u, params, updates)
    tw = torch.nn.Parameter(torch.tensor(w0))
    topt = torch.optim.Adam([tw], lr=1e-2, weight_decay=0.1)
    for g in grads:
        tw.grad = torch.tensor(g)
        topt.step()
    np.testing.assert_allclose(np.asarray(params["w"]), tw.detach().numpy(), atol=1e-6)


def test_warmup_ratio_is_a_fraction_of_the_run():
    cfg = optim.default_config()
    cfg.update(schedule="warmup_linear", learning_rate=1.0, warmup_ratio=0.25)
    lr = optim.schedule(cfg, 40)  # 10 warm-up steps, then 30 of linear decay
    np.testing.assert_allclose(
        [lr(0), lr(5), lr(10), lr(25), lr(40)], [0, 0.5, 1, 0.5, 0], atol=1e-6
    )
    cfg.warmup_steps = 4  # an explicit step count wins
    np.testing.assert_allclose(optim.schedule(cfg, 40)(4), 1.0, atol=1e-6)
    cfg.update(warmup_steps=0, warmup_ratio=1.5)
    with pytest.raises(UserError, match="warmup_ratio"):
        optim.schedule(cfg, 40)


def test_adamw_mask_skips_biases_and_norm_scales():
    params = {
        "dense": {"kernel": jnp.ones((2, 2)), "bias": jnp.ones(2)},
        "ln": {"scale": jnp.ones(2)},
    }
    mask = optim.decay_mask(params)
    assert mask == {"dense": {"kernel": True, "bias": False}, "ln": {"scale": False}}


def test_metrics_match_sklearn_and_ignore_padding(tmp_path):
    logits = np.array(
        [[2, 1, 0], [0, 3, 1], [1, 0, 2], [3, 0, 0], [0, 0, 5], [0, 2, 0], [9, 0, 0], [0, 9, 0]],
        np.float32,
    )
    labels = np.array([0, 1, 1, 0, 2, 2, 1, 2])
    mask = np.array([1, 1, 1, 1, 1, 1, 0, 0])  # the last two rows are padding (wrong on purpose)
    out = metrics_lib.classification(logits, labels, mask, ["x", "y", "z"])
    y, p = labels[:6], logits[:6].argmax(-1)
    assert out["n"] == 6
    assert out["accuracy"] == pytest.approx(skm.accuracy_score(y, p))
    assert out["accuracy"] == pytest.approx(4 / 6)
    assert out["f1_weighted"] == pytest.approx(skm.f1_score(y, p, average="weighted"))
    assert out["f1_macro"] == pytest.approx(skm.f1_score(y, p, average="macro"))
    assert out["f1_micro"] == pytest.approx(skm.f1_score(y, p, average="micro"))
    assert out["recall_y"] == pytest.approx(0.5)
    probs = jax.nn.softmax(logits[:6].astype(np.float64), -1)
    assert out["roc_auc"] == pytest.approx(
        skm.roc_auc_score(y, np.asarray(probs), multi_class="ovr")
    )
    assert out["confusion_matrix"] == skm.confusion_matrix(y, p).tolist()
    binary = metrics_lib.classification(
        logits[:6, :2], np.array([0, 1, 1, 0, 0, 1]), mask[:6], "ab"
    )
    assert binary["roc_auc"] == pytest.approx(
        skm.roc_auc_score([0, 1, 1, 0, 0, 1], np.asarray(jax.nn.softmax(logits[:6, :2]))[:, 1])
    )
    png = tmp_path / "cm.png"
    metrics_lib.plot_confusion(out["confusion_matrix"], ["x", "y", "z"], str(png), "val")
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_resume_ends_with_the_parameters_of_an_uninterrupted_run(tmp_path):
    cfg = train_config(checkpoint_every_steps=1, max_to_keep=2)
    full, full_hist = run_fit(tmp_path / "full", cfg, n_batches=4)
    with pytest.raises(KeyboardInterrupt):
        run_fit(tmp_path / "resumed", cfg, n_batches=4, stop_after=7)  # killed in epoch 2
    saved = sorted(
        int(p.name) for p in (tmp_path / "resumed" / "checkpoints").iterdir() if p.name.isdigit()
    )
    assert 4 < saved[-1] < 8  # the rerun really starts inside the second epoch
    resumed, hist = run_fit(tmp_path / "resumed", cfg, n_batches=4)
    assert int(resumed.step) == 8
    np.testing.assert_array_equal(_flat(resumed.params), _flat(full.params))
    np.testing.assert_array_equal(_flat(resumed.opt_state), _flat(full.opt_state))
    assert [h["loss"] for h in hist] == [h["loss"] for h in full_hist]
    steps_logged = [json.loads(x)["step"] for x in open(tmp_path / "resumed" / "metrics.jsonl")]
    assert steps_logged == [
        json.loads(x)["step"] for x in open(tmp_path / "full" / "metrics.jsonl")
    ]


def _saved_steps(workdir):
    return sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())


def test_epoch_checkpoints_at_most_every_checkpoint_min_secs(tmp_path):
    # 0: every epoch end is saved. A minute: the epochs here take milliseconds, so only the
    # epoch that ends training is; a run killed before it restarts from scratch and still ends
    # with the parameters of the run that saved every epoch.
    every, _ = run_fit(tmp_path / "every", train_config(epochs=3, max_to_keep=5))
    assert _saved_steps(tmp_path / "every") == [3, 6, 9]
    cfg = train_config(epochs=3, max_to_keep=5, checkpoint_min_secs=60.0)
    with pytest.raises(KeyboardInterrupt):
        run_fit(tmp_path / "sparse", cfg, stop_after=7)  # killed in epoch 3
    assert _saved_steps(tmp_path / "sparse") == []
    sparse, _ = run_fit(tmp_path / "sparse", cfg)
    assert _saved_steps(tmp_path / "sparse") == [9]
    np.testing.assert_array_equal(_flat(sparse.params), _flat(every.params))
    # An early stop ends training: that epoch is saved too.
    cfg = train_config(epochs=30, early_stop_patience=1, checkpoint_min_secs=60.0)
    stopped, hist = run_fit(tmp_path / "stop", cfg, lr=0.5)
    assert len(hist) < 30 and _saved_steps(tmp_path / "stop") == [int(stopped.step)]


def test_a_rerun_with_another_learning_rate_does_not_resume(tmp_path):
    # Killed mid-run at lr 1e-2, then rerun at lr 0.1: the old checkpoints must not be used.
    cfg = train_config(checkpoint_every_steps=1)
    with pytest.raises(KeyboardInterrupt):
        run_fit(tmp_path / "a", cfg, stop_after=4, lr=1e-2)
    rerun, _ = run_fit(tmp_path / "a", cfg, lr=0.1)
    fresh, _ = run_fit(tmp_path / "b", cfg, lr=0.1)
    np.testing.assert_array_equal(_flat(rerun.params), _flat(fresh.params))
    old = tmp_path / "a" / checkpoints.SUPERSEDED
    assert 0 < max(int(p.name) for p in old.iterdir() if p.name.isdigit()) < 6  # kept aside


def test_early_stop_is_the_notebooks_rule():
    """SPEC: after epoch 10, stop when min(val_loss[-10:]) > min(val_loss[:-10])."""
    rng = np.random.default_rng(0)
    for _ in range(200):
        losses = list(rng.choice([0.5, 0.6, 0.7], size=rng.integers(1, 25)))
        want = len(losses) > 10 and min(losses[-10:]) > min(losses[:-10])
        assert loop.early_stop(losses, 10) == want
    assert not loop.early_stop([1.0] + [2.0] * 9, 10)  # epoch 10: never before it ends
    assert loop.early_stop([1.0] + [2.0] * 10, 10)
    assert not loop.early_stop([1.0] + [2.0] * 9 + [1.0], 10)  # a tie is not above


def test_best_val_and_early_stop(tmp_path):
    assert loop.early_stop([1.0, 0.5, 0.6, 0.7], 2)
    assert not loop.early_stop([1.0, 0.5, 0.6, 0.4], 2)
    assert not loop.early_stop([1.0, 0.9], 2)
    cfg = train_config(epochs=4, model_choice="best_val")
    final, hist = run_fit(tmp_path, cfg, lr=0.5)
    best = min(range(len(hist)), key=lambda i: hist[i]["loss"])
    final_last, _ = run_fit(tmp_path / "last", train_config(epochs=best + 1), lr=0.5)
    np.testing.assert_array_equal(_flat(final.params), _flat(final_last.params))


def test_nan_loss_stops_with_a_clear_message_and_a_good_checkpoint(tmp_path):
    cfg = train_config(checkpoint_every_steps=2)
    with pytest.raises(loop.NonFiniteLoss, match="NaN/inf at step 5.*checkpoint: step 4"):
        run_fit(tmp_path, cfg, nan_at=4)
    restored, _, _ = checkpoints.Checkpoints(str(tmp_path), max_to_keep=3, keep_best=False).restore(
        new_state()
    )
    assert int(restored.step) == 4
    assert np.isfinite(_flat(restored.params)).all()


def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_one(tmp_path, caplog):
    cfg = train_config(checkpoint_every_steps=1, max_to_keep=3)
    full, _ = run_fit(tmp_path / "full", cfg, n_batches=4)
    with pytest.raises(KeyboardInterrupt):
        run_fit(tmp_path / "b", cfg, n_batches=4, stop_after=7)
    steps_dir = tmp_path / "b" / "checkpoints"
    newest = max((p for p in steps_dir.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    for f in (newest / "state").rglob("*"):
        if f.is_file() and f.stat().st_size > 0:
            f.write_bytes(b"\x00garbage" * 3)  # a write cut short / a bad disk block
    # metrics.jsonl cut mid-line by the kill.
    with open(tmp_path / "b" / "metrics.jsonl", "a") as f:
        f.write('{"step": 9, "epo')
    with caplog.at_level("WARNING"):
        resumed, _ = run_fit(tmp_path / "b", cfg, n_batches=4)
    assert f"checkpoint at step {newest.name}" in caplog.text and "damaged; dropped" in caplog.text
    np.testing.assert_array_equal(_flat(resumed.params), _flat(full.params))
    lines = (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in lines] == [
        json.loads(x)["step"] for x in open(tmp_path / "full" / "metrics.jsonl")
    ]
