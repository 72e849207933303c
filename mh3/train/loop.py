"""The training loop shared by every trained stage: epochs, validation, checkpoints, resume.

`fit` drives a pmapped `train_step` over batches that the caller produces per epoch. Batches
must depend only on (seed, epoch), never on process state: a rerun restores the latest
checkpoint, skips the batches of the current epoch it already consumed, and continues, so it
ends with exactly the parameters of an uninterrupted run.

Keys of `config.train` used here (every one set in the stage config):
  epochs: passes over the training data.
  num_steps: stop after this many steps (0 = epochs decide).
  model_choice: `last` (the paper: keep the final model) or `best_val` (the model of the epoch
    with the best validation `select_metric`).
  select_metric: `loss` (lower is better) or a key of mh3.train.metrics (higher is better).
  early_stop_patience: the paper's rule, 0 = off: stop when the last N validation losses are
    all above the minimum of the earlier ones.
  checkpoint_every_steps: also checkpoint every N steps inside an epoch (0 = epoch ends only).
  checkpoint_min_secs: epoch-end checkpoints at least this many seconds apart (0 = every epoch
    end); the epoch that ends training is always saved. Short epochs then do not each pay a
    full save (the demo's emotion stage spent 12-18 of its ~50 s saving 84 epochs); a killed
    run loses at most this long plus one epoch, and resumes to the same parameters anyway.
  max_to_keep: checkpoints kept on disk.
  log_every_steps: how often training metrics are fetched from the devices and logged.

Each logged record goes to `metrics.jsonl` and, as scalars, to TensorBoard (`<workdir>/tb/`;
mh3.train.tracking). Train records: `loss` (and the loss's named parts, e.g. the student's
`loss_ce`, `loss_kd`), `accuracy`, `grad_norm`, means over the steps since the last record;
`learning_rate` (the schedule's rate times the plateau scale, at the last step) and
`examples_per_s`. Validation records: every scalar metric of `evaluate`, once per epoch.
"""

import collections
import functools
import os
import time
from collections.abc import Callable, Iterable, Sequence

import jax.numpy as jnp
import numpy as np
from absl import logging

from mh3.errors import UserError
from mh3.train import checkpoints, parallel, steps, tracking
from mh3.train import metrics as metrics_lib
from mh3.train import state as state_lib


class NonFiniteLoss(UserError):
    """The training loss became NaN or infinite; the message names the last good checkpoint."""


def early_stop(val_losses: Sequence[float], patience: int) -> bool:
    """The paper's rule: the last `patience` losses are all above the earlier minimum."""
    if patience <= 0 or len(val_losses) <= patience:
        return False
    return min(val_losses[-patience:]) > min(val_losses[:-patience])


# The per-row arrays of `evaluate`'s result (everything else in it is a metric).
PER_ROW = ("logits", "labels", "mask", "index")
# Step metrics that are not averages over examples (the rest are, weighted by `count`).
NOT_MEANS = ("count", "finite", "grad_norm", "accuracy")


def _outputs(fn: Callable, batches: Iterable[dict], bar, size: Callable, ahead: int = 2):
    """Yields (host output of `fn(device batch)`, host batch) in order, fetching each output
    while up to `ahead` later batches are queued: the devices stay busy, device memory stays
    bounded, and `bar` advances (by `size(host batch)`) as results actually arrive."""
    queue = collections.deque()

    def pop():
        out, host = queue.popleft()
        out = parallel.to_host(out)
        bar.update(size(host))
        return out, host

    for batch, host in parallel.prefetch(batches):
        queue.append((fn(batch), host))
        if len(queue) > ahead:
            yield pop()
    while queue:
        yield pop()


def evaluate(
    pstate, p_eval: Callable, batches: Iterable[dict], class_names=None, *, desc: str = "eval"
) -> dict:
    """Loss over a split and, with `class_names`, every mh3.train.metrics value.

    Returns:
      dict with `loss` (and the loss's named parts, e.g. `loss_ce`), and the PER_ROW host
      arrays `logits`, `labels`, `mask`, `index` (padding rows included; index -1 where
      batches carry none) plus the classification metrics when class_names is given, and then
      also `f1_weighted_batch_mean` (the mean of per-batch weighted F1: the notebooks' search
      objective).
    """
    logits, labels, masks, index, sizes = [], [], [], [], []
    sums: dict[str, float] = collections.defaultdict(float)
    total = 0.0
    bar = tracking.progress(None, desc, "batch")
    try:
        for out, host in _outputs(functools.partial(p_eval, pstate), batches, bar, lambda host: 1):
            labels.append(np.asarray(host["label"]))
            masks.append(np.asarray(host["mask"]))
            index.append(np.asarray(host.get("index", np.full(len(host["mask"]), -1))))
            sizes.append(len(host["mask"]))
            logit = out["logits"]
            logits.append(logit.reshape(-1, *logit.shape[2:]))
            count = float(out["metrics"]["count"][0])
            total += count
            for key, value in out["metrics"].items():
                if key not in NOT_MEANS:
                    sums[key] += float(value[0]) * count
    finally:
        bar.close()
    total = max(total, 1.0)
    result = {key: value / total for key, value in sums.items()}
    result.update(
        logits=np.concatenate(logits),
        labels=np.concatenate(labels),
        mask=np.concatenate(masks),
        index=np.concatenate(index),
    )
    if parallel.process_count() > 1 and sizes:
        # Each process holds its slice of every batch; the metrics are over all of them.
        result.update(parallel.gather_rows({k: result[k] for k in PER_ROW}, sizes[0]))
        sizes = [size * parallel.process_count() for size in sizes]
    if class_names is not None:
        result.update(
            metrics_lib.classification(
                result["logits"], result["labels"], result["mask"], class_names
            )
        )
        result["f1_weighted_batch_mean"] = metrics_lib.batch_mean_f1_weighted(
            result["logits"], result["labels"], result["mask"], sizes
        )
    return result


def _forward(variables, batch, *, apply_fn, input_keys):
    inputs = {k: batch[k] for k in input_keys if k in batch}
    logits, _ = apply_fn(variables, inputs, train=False)
    return logits.astype(jnp.float32)


def forward_fn(apply_fn: Callable, input_keys: tuple[str, ...]) -> Callable:
    """A pmapped eval-mode forward `(replicated variables, device batch) -> float32 logits`;
    build it once per model and reuse it, so each batch shape compiles once."""
    return parallel.pmap(functools.partial(_forward, apply_fn=apply_fn, input_keys=input_keys))


def predict_logits(
    forward: Callable, replicated, batches: Iterable[dict], n: int, *, desc: str = "predict"
) -> np.ndarray:
    """Runs `forward` (from `forward_fn`) over eval batches; (n, C) logits by `batch['index']`.

    Args:
      forward: the pmapped forward.
      replicated: the model's variables, replicated over the local devices.
      batches: host batches with `mask` and `index` (rows a multiple of the device count).
      n: how many examples; every index in [0, n) must be covered.
      desc: the progress bar's name.

    Rows with `mask == 0` (padding) are dropped.
    """
    out = None
    bar = tracking.progress(n, desc, "ex")
    try:
        for logits, host in _outputs(
            functools.partial(forward, replicated),
            batches,
            bar,
            lambda host: int(np.sum(np.asarray(host["mask"]) > 0)),
        ):
            keep, index = np.asarray(host["mask"]) > 0, np.asarray(host["index"])
            logits = logits.reshape(-1, logits.shape[-1])
            if out is None:
                out = np.full((n, logits.shape[-1]), np.nan, np.float32)
            out[index[keep]] = logits[keep]
    finally:
        bar.close()
    if out is None or np.isnan(out).any():
        missing = n if out is None else int(np.isnan(out).any(axis=1).sum())
        raise ValueError(f"{missing} of {n} examples got no prediction")
    return out


@functools.cache
def pmapped_steps(loss_fn: Callable) -> tuple[Callable, Callable]:
    """(pmapped train_step, pmapped eval_step) for `loss_fn`, built once per process: jax
    caches compiled code per function object, so every run with the same loss (the runs of a
    pipeline, a rerun in the same process) reuses the steps compiled for the first."""
    p_train = parallel.pmap(
        functools.partial(steps.train_step, loss_fn=loss_fn), donate_argnums=(0,)
    )
    return p_train, parallel.pmap(functools.partial(steps.eval_step, loss_fn=loss_fn))


def _better(metric: str, new: float, old: float | None) -> bool:
    if old is None:
        return True
    return new < old if metric == "loss" else new > old


def _plateau_scale(state: state_lib.TrainState) -> float:
    """The reduce-on-plateau factor on the learning rate (both rules keep it as `scale`)."""
    return 1.0 if state.plateau is None else float(np.asarray(state.plateau.scale))


def fit(
    state: state_lib.TrainState,
    *,
    loss_fn: Callable,
    train_batches: Callable[[int], Iterable[dict]],
    steps_per_epoch: int,
    val_batches: Callable[[], Iterable[dict]] | None,
    train_config,
    workdir: str,
    fingerprint: dict,
    class_names: Sequence[str] | None = None,
    on_epoch: Callable[[int, dict | None], None] | None = None,
    learning_rate: Callable[[int], float] | None = None,
) -> tuple[state_lib.TrainState, list[dict]]:
    """Trains `state`, resuming from `<workdir>/checkpoints` when it holds a checkpoint.

    Args:
      state: a fresh host state (mh3.train.state.create); its shapes are the restore target.
      loss_fn: per-example loss (see mh3.train.steps).
      train_batches: epoch -> host batches of that epoch (each with `mask`; the row count a
        multiple of the device count), deterministic in (seed, epoch).
      steps_per_epoch: batches per epoch.
      val_batches: () -> validation batches, or None for no validation.
      train_config: the `config.train` block (keys in the module docstring).
      workdir: run folder for checkpoints/ and metrics.jsonl.
      fingerprint: what the run is (mh3.train.checkpoints.fingerprint of its config and
        inputs); checkpoints made by another fingerprint are never resumed from. Its `optim.*`
        keys, when present, also give the learning rate the records report.
      class_names: enables classification metrics in validation records.
      on_epoch: called as `on_epoch(epoch, validation record or None)` after each epoch
        and its checkpoint, when one is due (e.g. a hyper-parameter search reporting to its pruner); an exception it
        raises stops training, with the checkpoints kept.
      learning_rate: step -> the rate of the update that step makes (mh3.train.tracking.
        step_rate), logged times the plateau scale; None logs no rate.

    Returns:
      (host state with the chosen params, per-epoch validation records).

    Raises:
      NonFiniteLoss: the loss became NaN/inf; the last good checkpoint stays on disk.
    """
    cfg = train_config
    keep_best = cfg.model_choice == "best_val"
    if cfg.model_choice not in ("last", "best_val"):
        raise UserError(f"config train.model_choice={cfg.model_choice!r}; choose last or best_val")
    if keep_best and val_batches is None:
        raise UserError("config train.model_choice=best_val needs a validation split")
    total_steps = cfg.num_steps or cfg.epochs * steps_per_epoch
    ckpt = checkpoints.Checkpoints(
        workdir, max_to_keep=cfg.max_to_keep, keep_best=keep_best, fp=fingerprint
    )
    loop = {"history": [], "best_score": None, "best_epoch": None, "stopped": False}
    best = None
    if ckpt.latest_step() is not None:
        state, restored_loop, best = ckpt.restore(state)
        if restored_loop is not None:
            loop = restored_loop
            logging.info("resuming from checkpoint at step %d in %s", state.step, ckpt.directory)
    start = int(state.step)
    p_train, p_eval = pmapped_steps(loss_fn)
    pstate = parallel.replicate(state)
    last_saved = ckpt.latest_step()
    saved_at = time.perf_counter()  # the first epoch-end save waits as long as any other
    pending: list = []
    # The plateau scale changes only on the host at epoch ends, so a host copy is current and
    # reading it costs no device sync.
    clock = {"t": time.perf_counter(), "examples": 0, "scale": _plateau_scale(state)}
    name = os.path.basename(os.path.normpath(workdir))
    tracker = tracking.Tracker(workdir, start)
    bar = tracking.progress(total_steps, f"train {name}", "step", initial=start)

    def flush(step: int, epoch: int) -> None:
        # The only host sync of the training steps: fetch what accumulated since last time.
        if not pending:
            return
        fetched = parallel.to_host(list(pending))
        pending.clear()
        for i, m in enumerate(fetched):
            if m["finite"][0] < 1:
                bad = step - len(fetched) + i + 1
                where = f"step {last_saved} in {ckpt.directory}" if last_saved else "none saved"
                raise NonFiniteLoss(
                    f"training loss became NaN/inf at step {bad} (epoch {epoch + 1}); stopped; "
                    f"last good checkpoint: {where}; lower optim.learning_rate or set "
                    "optim.clip_norm"
                )
        now = time.perf_counter()
        rate = clock["examples"] / max(now - clock["t"], 1e-9)
        clock.update(t=now, examples=0)
        record = {"step": step, "epoch": epoch, "split": "train"}
        # Means over the window; the loss's named parts (e.g. loss_ce, loss_kd) after `loss`.
        for key in ("loss", *(k for k in fetched[0] if k not in ("loss", *NOT_MEANS))):
            record[key] = float(np.mean([m[key][0] for m in fetched]))
        record["accuracy"] = (
            float(np.mean([m["accuracy"][0] for m in fetched]))
            if "accuracy" in fetched[0]
            else None
        )
        record["grad_norm"] = float(np.mean([m["grad_norm"][0] for m in fetched]))
        if learning_rate is not None:
            record["learning_rate"] = learning_rate(step) * clock["scale"]
        record["examples_per_s"] = rate
        tracker.write(record)
        bar.set_postfix(loss=f"{record['loss']:.4f}", ex_s=f"{rate:.1f}")

    try:
        step = start
        epoch = start // steps_per_epoch
        done_epochs = len(loop["history"])
        while step < total_steps and not loop["stopped"]:
            skip = step - epoch * steps_per_epoch
            if epoch < done_epochs:  # finished epoch whose validation is already recorded
                epoch += 1
                continue
            batches = iter(train_batches(epoch))
            for _ in range(skip):
                next(batches)
            todo = range(steps_per_epoch - skip)
            for (batch, host), _ in zip(parallel.prefetch(batches), todo, strict=False):
                pstate, m = p_train(pstate, batch)
                pending.append(m)
                step += 1
                clock["examples"] += int(np.sum(host["mask"]))
                bar.update(1)
                if step % cfg.log_every_steps == 0:
                    flush(step, epoch)
                end_of_epoch = step == (epoch + 1) * steps_per_epoch or step >= total_steps
                if (
                    cfg.checkpoint_every_steps
                    and step % cfg.checkpoint_every_steps == 0
                    and not end_of_epoch
                ):
                    flush(step, epoch)
                    ckpt.save(step, parallel.unreplicate(pstate), loop, best)
                    last_saved, saved_at = step, time.perf_counter()
                if step >= total_steps:
                    break
            flush(step, epoch)
            host_state = parallel.unreplicate(pstate)
            if val_batches is not None:
                val = evaluate(pstate, p_eval, val_batches(), class_names, desc=f"val {name}")
                record = {k: v for k, v in val.items() if k not in PER_ROW}
                record.update(step=step, epoch=epoch, split="val")
                tracker.write(record)
                loop["history"].append(
                    {
                        "epoch": epoch,
                        "step": step,
                        "loss": val["loss"],
                        "score": val[cfg.select_metric],
                    }
                )
                logging.info(
                    "epoch %d val loss %.4f %s %.4f",
                    epoch + 1,
                    val["loss"],
                    cfg.select_metric,
                    val[cfg.select_metric],
                )
                if keep_best and _better(
                    cfg.select_metric, val[cfg.select_metric], loop["best_score"]
                ):
                    loop.update(best_score=val[cfg.select_metric], best_epoch=epoch)
                    best = host_state.params
                if host_state.plateau_tx is not None:
                    host_state = state_lib.step_plateau(host_state, val["loss"])
                    pstate = parallel.replicate(host_state)
                    clock["scale"] = _plateau_scale(host_state)
                losses = [h["loss"] for h in loop["history"]]
                if early_stop(losses, cfg.early_stop_patience):
                    logging.info(
                        "early stop after epoch %d: last %d val losses above the minimum",
                        epoch + 1,
                        cfg.early_stop_patience,
                    )
                    loop["stopped"] = True
            else:
                record = None
                loop["history"].append({"epoch": epoch, "step": step})
            last_epoch = loop["stopped"] or step >= total_steps
            if last_epoch or time.perf_counter() - saved_at >= cfg.checkpoint_min_secs:
                ckpt.save(step, host_state, loop, best)
                last_saved, saved_at = step, time.perf_counter()
            if on_epoch is not None:
                on_epoch(epoch, record)
            epoch += 1
            done_epochs = len(loop["history"])
    finally:
        # Also on errors and interrupts: pending asynchronous saves must reach the disk.
        bar.close()
        tracker.close()
        ckpt.close()
    final = parallel.unreplicate(pstate)
    if keep_best and best is not None:
        final = final.replace(params=best)
    return final, loop["history"]
