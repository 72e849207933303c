"""The emotion-teacher stage (SPEC stage 3): MM-EMOG table -> frozen lookup -> MLP classifier.

The table comes from `config.table` or, when that is empty, from the emotion-embedding stage,
run (or reused) through `run_stage`. The trained teacher is exported for the student:
`<workdir>/params/` (mh3.weights.mmemog.save_teacher: settings, class names, params and the
frozen table) and `<workdir>/tokenizer/` (added tokens included).

The frozen table travels with the params through the training core as a second variable
collection, `{'params': ..., 'table': ...}`: the model stops its gradient, and the optimizer
gives it a zero update (optax.multi_transform), so neither Adam moments nor weight decay touch
it, and the trained MLP and its table are checkpointed and resumed together.
"""

import functools
import os

import jax
import ml_collections
import optax
from absl import logging

from mh3 import data, stages
from mh3.models import emotion
from mh3.train import checkpoints, loop, optim, parallel, steps
from mh3.train import state as state_lib
from mh3.weights import mmemog


def frozen_table_tx(tx: optax.GradientTransformation) -> optax.GradientTransformation:
    """`tx` on the MLP params; the table collection gets zero updates and no optimizer state."""
    return optax.multi_transform(
        {"train": tx, "frozen": optax.set_to_zero()},
        {"params": "train", emotion.TABLE: "frozen"},
    )


def table_loss(variables, apply_fn, batch, dropout_rng, train):
    """Softmax cross-entropy where the state's params are the full variables (params + table)."""
    inputs = {"input_ids": batch["input_ids"]}  # input ids only: no mask, as in the paper
    logits, _ = apply_fn(variables, inputs, train=train, rngs={"dropout": dropout_rng})
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"])
    return loss, {"logits": logits}


def embeddings_config(config) -> ml_collections.ConfigDict:
    """The emotion-embedding stage's config with this stage's data block."""
    emb = ml_collections.ConfigDict(config.embeddings.to_dict())
    emb.data = ml_collections.ConfigDict(config.data.to_dict())
    emb.emotion.vocab_splits = tuple(config.data.added_token_splits)
    return emb


def resolve_table(config, workdir: str) -> tuple[dict, "object", str]:
    """(vocab_map, weights, path) from `config.table` or the emotion-embedding stage."""
    path = config.table
    if not path:
        emb_dir = config.embeddings_workdir or os.path.join(workdir, "emotion_embeddings")
        logging.info("no emotion table given; emotion-embedding stage in %s", emb_dir)
        path = stages.run_stage(embeddings_config(config), emb_dir)["table"]
    vocab_map, weights = mmemog.load(path)
    return vocab_map, weights, path


def run(config, workdir: str) -> dict:
    vocab_map, weights, table_path = resolve_table(config, workdir)
    cfg = config.data
    prep = data.prepare(cfg)
    tokenizer, classes = prep.tokenizer, prep.dataset.classes
    table = mmemog.teacher_table(vocab_map, weights, tokenizer.hf, seed=config.table_seed)

    model = emotion.EmotionMLP(
        num_labels=len(classes),
        vocab_size=table.shape[0],
        embed_dim=table.shape[1],
        max_length=prep.max_len,
        num_layers=config.model.num_layers,
        hidden_size=config.model.hidden_size,
        dropout_rate=config.model.dropout,
        output_relu=config.model.output_relu,
        pad_token_id=tokenizer.pad_id,
    )
    key = jax.random.PRNGKey(config.seed)
    variables = {
        "params": emotion.init_params(model, config.seed),
        emotion.TABLE: {"embedding": table},
    }

    def batches(split, *, train, epoch=0):
        return data.batches(
            prep.encoded[split],
            cfg.batch_size if train else cfg.eval_batch_size,
            pad_id=tokenizer.pad_id,
            train=train,
            seed=config.seed,
            epoch=epoch,
            buckets=prep.buckets,
            group_batches=cfg.group_batches,
            process_index=parallel.process_index(),
            process_count=parallel.process_count(),
        )

    steps_per_epoch = data.num_batches(
        len(prep.encoded["train"].ids), cfg.batch_size, parallel.process_count()
    )
    total = config.train.num_steps or config.train.epochs * steps_per_epoch
    tx = frozen_table_tx(optim.make(config.optim, total))
    state = state_lib.create(model.apply, variables, tx, jax.random.fold_in(key, 1))
    has_val = len(prep.encoded["val"].ids) > 0
    state, history = loop.fit(
        state,
        loss_fn=table_loss,
        train_batches=lambda epoch: batches("train", train=True, epoch=epoch),
        steps_per_epoch=steps_per_epoch,
        val_batches=(lambda: batches("val", train=False)) if has_val else None,
        train_config=config.train,
        workdir=workdir,
        fingerprint=checkpoints.fingerprint(config),
        class_names=classes,
    )

    pstate = parallel.replicate(state)
    p_eval = parallel.pmap(functools.partial(steps.eval_step, loss_fn=table_loss))
    results = {"data": prep.dataset.summary()}
    sizes = {s: len(prep.encoded[s].ids) for s in ("val", "test")}
    results.update(
        loop.report_splits(
            pstate, p_eval, lambda s: batches(s, train=False), sizes, classes, workdir,
            f"emotion teacher, {prep.dataset.name}",
        )
    )  # fmt: skip

    params_dir = os.path.join(workdir, "params")
    tokenizer_dir = os.path.join(workdir, "tokenizer")
    mmemog.save_teacher(params_dir, model, state.params, classes)
    tokenizer.save(tokenizer_dir)
    results.update(
        params=params_dir,
        tokenizer=tokenizer_dir,
        table=table_path,
        table_shape=list(table.shape),
        mmemog_rows=len(vocab_map),
        max_len=prep.max_len,
        epochs=len(history),
        history=history,
    )
    return results
