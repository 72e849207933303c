"""The text-teacher stage: fine-tune a BERT-family classifier and export it (SPEC Stage 3).

Loads the dataset and builds the teacher's tokenizer with the added tokens, loads the
checkpoint with `from_hf` (overrides from config.model), grows the word embeddings for the added
tokens, trains with mh3.train.loop (resumable), evaluates val and test with the chosen model,
and writes `params/` (see mh3.train.export) for the student stage, plus confusion-matrix PNGs.
"""

import functools
import os

import jax
from absl import logging

from mh3 import data, weights
from mh3.errors import UserError
from mh3.train import export, loop, optim, parallel, steps
from mh3.train import metrics as metrics_lib
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


def run(config, workdir: str) -> dict:
    if config.model.compute_dtype not in export.DTYPES:
        raise UserError(
            f"config model.compute_dtype={config.model.compute_dtype!r}; "
            f"choose one of {list(export.DTYPES)}"
        )
    jax.config.update("jax_default_prng_impl", config.train.prng_impl)
    prep = data.prepare(config.data)
    ds, tok = prep.dataset, prep.tokenizer
    classes = list(ds.classes)
    n_dev = parallel.device_count() * parallel.process_count()
    for key in ("batch_size", "eval_batch_size"):
        if config.data[key] % n_dev:
            raise UserError(f"config data.{key}={config.data[key]} must be a multiple of {n_dev}")

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

    def split_batches(split, train, epoch=0):
        size = config.data.batch_size if train else config.data.eval_batch_size
        return prep.batches(split, size, train=train, seed=config.seed, epoch=epoch,
                            group_batches=config.data.group_batches, **proc)  # fmt: skip

    final, history = loop.fit(
        state,
        loss_fn=steps.classification_loss,
        train_batches=lambda epoch: split_batches("train", True, epoch),
        steps_per_epoch=steps_per_epoch,
        val_batches=lambda: split_batches("val", False),
        train_config=config.train,
        workdir=workdir,
        class_names=classes,
    )

    # Evaluate the chosen model on val and test (the held-out numbers of the run).
    p_eval = parallel.pmap(functools.partial(steps.eval_step, loss_fn=steps.classification_loss))
    pstate = parallel.replicate(final)
    results = {"data": ds.summary(), "max_len": prep.max_len, "history": history}
    for split in ("val", "test"):
        if not len(prep.encoded[split].labels):
            continue
        out = loop.evaluate(pstate, p_eval, split_batches(split, False), classes)
        results[split] = {k: v for k, v in out.items() if k not in ("logits", "labels", "mask")}
        png = os.path.join(workdir, f"confusion_{split}.png")
        metrics_lib.plot_confusion(out["confusion_matrix"], classes, png, f"{split} ({ds.name})")
        results[split]["confusion_png"] = png
        logging.info(
            "%s: accuracy %.4f f1_weighted %.4f", split, out["accuracy"], out["f1_weighted"]
        )
    params_dir = os.path.join(workdir, "params")
    if parallel.process_index() == 0:
        export.save_text_teacher(
            params_dir, model, final.params, tok, classes=classes, max_len=prep.max_len
        )
    results["params"] = params_dir
    return results
