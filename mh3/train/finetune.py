"""Fine-tuning a BERT-family classifier on prepared text data: the recipe shared by the text
teachers and the student.

`train_text_classifier` loads the checkpoint with `from_hf` (overrides from `config.model`),
grows the word embeddings for the tokenizer's added tokens, trains with mh3.train.loop (so a
killed run resumes from its Orbax checkpoints), and evaluates the chosen model on val and test.
The loss is the caller's: plain cross-entropy for a teacher, the KD loss for the student, which
also passes `extra_inputs` to attach each example's cached teacher logits to its batch.
"""

import functools
from collections.abc import Callable, Iterator

import jax
from absl import logging

from mh3 import data, weights
from mh3.errors import UserError
from mh3.train import checkpoints, export, loop, optim, parallel, steps
from mh3.train import state as state_lib


def overrides(model_cfg) -> dict:
    """The `from_hf` overrides a config.model block asks for (unset values are left out)."""
    out = {}
    if model_cfg.num_hidden_layers > 0:
        out["num_hidden_layers"] = model_cfg.num_hidden_layers
    if model_cfg.num_attention_heads > 0:
        out["num_attention_heads"] = model_cfg.num_attention_heads
    if model_cfg.hidden_act:
        out["hidden_act"] = model_cfg.hidden_act
    if model_cfg.hidden_dropout_prob >= 0:
        out["hidden_dropout_prob"] = model_cfg.hidden_dropout_prob
    return out


def check_batch_sizes(data_cfg) -> None:
    n_dev = parallel.device_count() * parallel.process_count()
    for key in ("batch_size", "eval_batch_size"):
        if data_cfg[key] % n_dev:
            raise UserError(f"config data.{key}={data_cfg[key]} must be a multiple of {n_dev}")


def train_text_classifier(
    config,
    workdir: str,
    prep: data.Prepared,
    *,
    loss_fn: Callable = steps.classification_loss,
    extra_inputs: Callable[[dict], dict] | None = None,
    fingerprint: dict | None = None,
):
    """Fine-tunes `config.model.name` on `prep` and evaluates it on val and test.

    Args:
      config: a stage config with `model`, `optim`, `train`, `data` blocks and `seed`.
      workdir: where checkpoints/, metrics.jsonl and the confusion PNGs go.
      prep: the prepared data (its tokenizer decides the vocabulary growth).
      loss_fn: a per-example loss for mh3.train.steps.
      extra_inputs: batch -> batch, applied to every host batch (e.g. adds teacher logits).
      fingerprint: what the checkpoints are bound to (mh3.train.checkpoints.fingerprint);
        default: `config` alone.

    Returns:
      (model, final host TrainState, results dict with `history`, `val`, `test`).
    """
    if config.model.compute_dtype not in export.DTYPES:
        raise UserError(
            f"config model.compute_dtype={config.model.compute_dtype!r}; "
            f"choose one of {list(export.DTYPES)}"
        )
    check_batch_sizes(config.data)
    ds, tok = prep.dataset, prep.tokenizer
    classes = list(ds.classes)
    model, params = weights.from_hf(
        config.model.name,
        num_labels=len(classes),
        seed=config.seed,
        dtype=export.DTYPES[config.model.compute_dtype],
        **overrides(config.model),
    )
    model, params = weights.grow_vocab(model, params, tok.vocab_size, seed=config.seed)
    logging.info("%s: %d added tokens, max_len %d", config.model.name, tok.num_added, prep.max_len)

    proc = dict(process_index=parallel.process_index(), process_count=parallel.process_count())
    steps_per_epoch = data.num_batches(
        len(prep.encoded["train"].labels), config.data.batch_size, proc["process_count"]
    )
    total = config.train.num_steps or config.train.epochs * steps_per_epoch
    tx = optim.make(config.optim, max(total // config.optim.accumulate_steps, 1))
    state = state_lib.create(
        model.apply, params, tx, jax.random.PRNGKey(config.seed), optim.plateau(config.optim)
    )

    def split_batches(split: str, train: bool, epoch: int = 0) -> Iterator[dict]:
        size = config.data.batch_size if train else config.data.eval_batch_size
        batches = prep.batches(split, size, train=train, seed=config.seed, epoch=epoch,
                               group_batches=config.data.group_batches, **proc)  # fmt: skip
        return map(extra_inputs, batches) if extra_inputs else batches

    final, history = loop.fit(
        state,
        loss_fn=loss_fn,
        train_batches=lambda epoch: split_batches("train", True, epoch),
        steps_per_epoch=steps_per_epoch,
        val_batches=(lambda: split_batches("val", False))
        if len(prep.encoded["val"].labels)
        else None,
        train_config=config.train,
        workdir=workdir,
        fingerprint=fingerprint or checkpoints.fingerprint(config),
        class_names=classes,
    )

    # Held-out numbers of the chosen model; the eval loss is plain cross-entropy on labels.
    p_eval = parallel.pmap(functools.partial(steps.eval_step, loss_fn=steps.classification_loss))
    pstate = parallel.replicate(final)
    results = {"data": ds.summary(), "max_len": prep.max_len, "history": history}
    sizes = {s: len(prep.encoded[s].labels) for s in ("val", "test")}
    results.update(
        loop.report_splits(
            pstate, p_eval, lambda s: split_batches(s, False), sizes, classes, workdir, ds.name
        )
    )
    return model, final, results
