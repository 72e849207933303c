"""The emotion-teacher stage (SPEC stage 3): MM-EMOG table -> frozen lookup -> MLP classifier.

The table comes from `config.table` or, when that is empty, from the emotion-embedding stage,
run (or reused) through `run_stage`. Training, held-out evaluation and the saved model are the
shared recipe's (mh3.train.recipe); this stage gives it the task. The saved model,
`<workdir>/model/`, is mh3's own format (mh3.weights.mmemog.save_model): settings, params and
frozen table, tokenizer with its added tokens, and `mh3.json`.

The frozen table travels with the params through the recipe as a second variable collection,
`{'params': ..., 'table': ...}`: the model stops its gradient, and the optimizer gives it a
zero update (optax.multi_transform, `Task.wrap_tx`), so neither Adam moments nor weight decay
touch it, and the trained MLP and its table are checkpointed, resumed and saved together.
"""

import functools
import os

import ml_collections
import optax
from absl import logging

from mh3 import data, stages
from mh3.models import emotion
from mh3.train import parallel, recipe
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


def build_model(model_cfg, table_shape, prep: data.Prepared) -> emotion.EmotionMLP:
    """The EmotionMLP of the `model` config block over a table of `table_shape`."""
    return emotion.EmotionMLP(
        num_labels=len(prep.dataset.classes),
        vocab_size=table_shape[0],
        embed_dim=table_shape[1],
        max_length=prep.max_len,
        num_layers=model_cfg.num_layers,
        hidden_size=model_cfg.hidden_size,
        dropout_rate=model_cfg.dropout,
        output_relu=model_cfg.output_relu,
        pad_token_id=prep.tokenizer.pad_id,
    )


def split_batches(config, prep: data.Prepared, split: str, *, train: bool, epoch: int = 0):
    """This process's batches of one split (`recipe.Task.batches`)."""
    return prep.batches(
        split,
        config.data.batch_size if train else config.data.eval_batch_size,
        train=train,
        seed=config.seed,
        epoch=epoch,
        group_batches=config.data.group_batches,
        process_index=parallel.process_index(),
        process_count=parallel.process_count(),
    )


def run(config, workdir: str) -> dict:
    vocab_map, weights, table_path = resolve_table(config, workdir)
    prep = data.prepare(config.data)
    data.check_trainable(prep.dataset)
    ds = prep.dataset
    table = mmemog.teacher_table(vocab_map, weights, prep.tokenizer.hf, seed=config.table_seed)
    model = build_model(config.model, table.shape, prep)
    keys = recipe.keys(config.seed)
    variables = {
        "params": emotion.init_params(model, recipe.key_seed(keys["init"])),
        emotion.TABLE: {"embedding": table},
    }
    task = recipe.Task(
        model=model,
        params=variables,
        batches=functools.partial(split_batches, config, prep),
        sizes={s: len(prep.encoded[s].ids) for s in data.SPLITS},
        classes=ds.classes,
        loss_fn=table_loss,
        wrap_tx=frozen_table_tx,
        save=functools.partial(
            mmemog.save_model,
            model=model,
            tokenizer=prep.tokenizer,
            classes=ds.classes,
            protocol=config.protocol,
            data_fingerprint=ds.fingerprint,
        ),
        ids=[e.id for e in ds.examples],
        title=f"emotion teacher, {ds.name}",
    )
    _, results = recipe.train(config, workdir, task, rng=keys["dropout"])
    return {
        "data": ds.summary(),
        **results,
        "table": table_path,
        "table_shape": list(table.shape),
        "mmemog_rows": len(vocab_map),
        "max_len": prep.max_len,
        "epochs": len(results["history"]),
    }
