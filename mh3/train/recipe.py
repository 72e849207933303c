"""The one training recipe: a stage describes what it trains as a `Task`; `train` does the rest.

A stage knows its data and its model. This module knows how mh3 trains anything: steps per
epoch (per process), optimizer updates (with gradient accumulation), the learning-rate
schedule, the optimizer (plus a task's wrapper, e.g. the emotion teacher's frozen table), the
reduce-on-plateau scheduler, the TrainState, the resumable pmapped loop (mh3.train.loop.fit),
held-out evaluation (metrics, confusion PNGs, per-example test predictions) and the saved
model, which process 0 alone writes.

Random numbers: one root key per run, `PRNGKey(config.seed)`, split by purpose (`keys`):
`init` for new weights (heads, models trained from scratch), `vocab` for rows added to a
pretrained vocabulary, `dropout` for the state's key (each step folds in its step number and
device). Data order is numpy's, from (seed, epoch, process), as before.
"""

import contextlib
import contextvars
import csv
import dataclasses
import functools
import os
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import jax
import numpy as np
from absl import logging

from mh3 import data, files
from mh3.errors import UserError
from mh3.train import checkpoints, loop, optim, parallel, steps, tracking
from mh3.train import metrics as metrics_lib
from mh3.train import state as state_lib

PURPOSES = ("init", "vocab", "dropout")
# `epoch_hook`'s callback, seen by every `train` inside its `with` block.
_EPOCH_HOOK: contextvars.ContextVar = contextvars.ContextVar("mh3_epoch_hook", default=None)
MODEL_DIR = "model"  # <workdir>/model/: the saved model (DESIGN, saved-model contract)


def keys(seed: int) -> dict[str, jax.Array]:
    """The run's keys by purpose, all split from `PRNGKey(seed)` (module docstring)."""
    return dict(
        zip(PURPOSES, jax.random.split(jax.random.PRNGKey(seed), len(PURPOSES)), strict=True)
    )


def key_seed(key: jax.Array) -> int:
    """An integer seed drawn from `key`, for APIs that take one (from_hf, grow_vocab)."""
    return int(jax.random.randint(key, (), 0, 2**31 - 1))


@dataclasses.dataclass
class Task:
    """What a stage trains. Batches are host dicts with `mask` (and `index` for predictions).

    Attributes:
      model: a Flax module; `model.apply(variables, batch, train=...)` -> (logits, out).
      params: the initial trainable tree (the state's params).
      batches: `(split, *, train, epoch=0)` -> host batches of that split, deterministic in
        (seed, epoch); rows a multiple of the device count.
      sizes: examples per split ('train', 'val', 'test').
      classes: class names in label order; None for a task that is not single-label
        classification (then `metrics` reports held-out splits).
      loss_fn: the per-example training loss (mh3.train.steps).
      eval_loss_fn: the held-out loss (the student trains on CE + KD, reports CE); None: loss_fn.
      wrap_tx: optimizer -> optimizer, e.g. to freeze part of the params.
      save: `(folder, params)` -> writes the saved model; None for nothing to save.
      metrics: `loop.evaluate` output -> metrics dict, for tasks without `classes`.
      ids: example id by global index, for the per-example predictions file.
      title: what plots name (e.g. the dataset).
    """

    model: Any
    params: Any
    batches: Callable[..., Iterable[dict]]
    sizes: dict[str, int]
    classes: Sequence[str] | None
    loss_fn: Callable = steps.classification_loss
    eval_loss_fn: Callable | None = None
    wrap_tx: Callable | None = None
    save: Callable[[str, Any], None] | None = None
    metrics: Callable[[dict], dict] | None = None
    ids: Sequence[str] | None = None
    title: str = ""


@contextlib.contextmanager
def epoch_hook(fn: Callable[[str, int, dict | None], None]):
    """Within the block, every run `train` makes calls `fn(workdir, epoch, val record)` after
    each epoch, however deep the stage that trains it (a pipeline's teachers included: filter
    on `workdir`). A hyper-parameter search reports to its pruner this way."""
    token = _EPOCH_HOOK.set(fn)
    try:
        yield
    finally:
        _EPOCH_HOOK.reset(token)


def check_batch_sizes(data_cfg) -> None:
    """Global batch sizes must split evenly over every device of every process."""
    n_dev = parallel.device_count() * parallel.process_count()
    for key in ("batch_size", "eval_batch_size"):
        if data_cfg[key] % n_dev:
            raise UserError(f"config data.{key}={data_cfg[key]} must be a multiple of {n_dev}")


def schedule_plan(config, n_train: int) -> dict:
    """Steps per epoch (per process), total steps and optimizer updates of a run."""
    steps_per_epoch = data.num_batches(n_train, config.data.batch_size, parallel.process_count())
    total = config.train.num_steps or config.train.epochs * steps_per_epoch
    return {
        "steps_per_epoch": steps_per_epoch,
        "total_steps": total,
        "accumulate_steps": config.optim.accumulate_steps,
        # MultiSteps makes one update every accumulate_steps steps: the schedule counts those.
        "updates": max(total // config.optim.accumulate_steps, 1),
        "plateau": config.optim.plateau_patience > 0,
    }


def train(
    config, workdir: str, task: Task, *, rng: jax.Array, fingerprint: dict | None = None
) -> tuple[state_lib.TrainState, dict]:
    """Trains `task` with the config's `optim`, `train` and `data` blocks, then reports.

    Args:
      config: a stage config with `optim`, `train`, `data` blocks.
      workdir: checkpoints/, metrics.jsonl, confusion PNGs, predictions and model/ go here.
      task: what to train.
      rng: the run's dropout key (`keys(seed)['dropout']`).
      fingerprint: what the checkpoints are bound to; default the config alone.

    Returns:
      (final host state with the chosen params, results dict with `schedule`, `history`,
      `val`/`test` metrics and, when the task saves, `model` (the saved-model folder)).
    """
    check_batch_sizes(config.data)
    plan = schedule_plan(config, task.sizes["train"])
    lr = optim.schedule(config.optim, plan["updates"])
    tx = optim.make(config.optim, plan["updates"], lr=lr)
    if task.wrap_tx is not None:
        tx = task.wrap_tx(tx)
    state = state_lib.create(task.model.apply, task.params, tx, rng, optim.plateau(config.optim))
    final, history = loop.fit(
        state,
        loss_fn=task.loss_fn,
        train_batches=lambda epoch: task.batches("train", train=True, epoch=epoch),
        steps_per_epoch=plan["steps_per_epoch"],
        val_batches=(lambda: task.batches("val", train=False)) if task.sizes["val"] else None,
        train_config=config.train,
        workdir=workdir,
        fingerprint=fingerprint or checkpoints.fingerprint(config),
        class_names=task.classes,
        on_epoch=functools.partial(hook, workdir) if (hook := _EPOCH_HOOK.get()) else None,
        learning_rate=tracking.step_rate(lr, config.optim.accumulate_steps),
    )
    results = {"schedule": plan, "history": history, **held_out(final, task, workdir)}
    if task.save is not None:
        folder = os.path.join(workdir, MODEL_DIR)
        if parallel.process_index() == 0:
            task.save(folder, final.params)
        parallel.sync("mh3-model-saved")
        results["model"] = folder
    return final, results


def held_out(state: state_lib.TrainState, task: Task, workdir: str) -> dict:
    """Val and test results of a trained state: metrics, a confusion PNG per split and the
    test split's per-example predictions (`predictions_test.csv`), for classification tasks."""
    _, p_eval = loop.pmapped_steps(task.eval_loss_fn or task.loss_fn)
    pstate = parallel.replicate(state)
    results = {}
    for split in ("val", "test"):
        if not task.sizes.get(split):
            continue
        out = loop.evaluate(pstate, p_eval, task.batches(split, train=False), task.classes)
        if task.classes is None:
            results[split] = {"loss": out["loss"], **task.metrics(out)}
            continue
        results[split] = {k: v for k, v in out.items() if k not in loop.PER_ROW}
        png = os.path.join(workdir, f"confusion_{split}.png")
        title = f"{split} ({task.title})"
        if parallel.process_index() == 0:
            metrics_lib.plot_confusion(out["confusion_matrix"], task.classes, png, title)
        results[split]["confusion_png"] = png
        logging.info(
            "%s: accuracy %.4f f1_weighted %.4f", split, out["accuracy"], out["f1_weighted"]
        )
        if split == "test":
            path = os.path.join(workdir, "predictions_test.csv")
            if parallel.process_index() == 0:
                write_predictions(path, out, task.classes, task.ids)
            results[split]["predictions"] = path
    return results


def write_predictions(path: str, out: dict, classes: Sequence[str], ids=None) -> None:
    """One row per real example of an evaluated split: index, id, label, predicted label and a
    probability column per class (`p_<class>`), sorted by index."""
    real = out["mask"] > 0
    logits = out["logits"][real].astype(np.float64)
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    index, labels = out["index"][real], out["labels"][real]
    order = np.argsort(index, kind="stable")

    def write(tmp):
        with open(tmp, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["index", "id", "label", "predicted", *(f"p_{c}" for c in classes)])
            for i in order:
                row_id = ids[index[i]] if ids is not None else ""
                w.writerow(
                    [int(index[i]), row_id, classes[labels[i]], classes[int(probs[i].argmax())]]
                    + [f"{p:.6f}" for p in probs[i]]
                )

    files.atomic_write(path, write)
