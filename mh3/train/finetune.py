"""The text fine-tuning task: a BERT-family classifier on prepared text data, for the text
teachers and the student.

`text_task` loads `config.model.name` with `from_hf` (overrides from `config.model`, a new head
from the run's `init` key), grows the word embeddings for the tokenizer's added tokens (from
the `vocab` key), and describes the batches, the loss and the saved model to
mh3.train.recipe, which trains, evaluates and saves it. The loss is the caller's: plain
cross-entropy for a teacher, the KD loss for the student, which also passes `extra_inputs` to
attach each example's cached teacher logits to its batch; held-out losses are cross-entropy.
"""

from collections.abc import Callable

from absl import logging

from mh3 import data, weights
from mh3.train import export, parallel, recipe, steps


def overrides(model_cfg, model_type: str) -> dict:
    """The `from_hf` overrides a config.model block asks for (unset values are left out).

    Args:
      model_cfg: the `config.model` block.
      model_type: the checkpoint's family (`bert`, `roberta`, `distilbert`): `hidden_act`
        only reaches the families in `hidden_act_families`, and `hidden_dropout_prob` also
        sets the attention dropout of those in `attention_dropout_families` (the notebooks'
        keys reached DistilBERT that way, configs/common.py).
    """
    out = {}
    if model_cfg.num_hidden_layers > 0:
        out["num_hidden_layers"] = model_cfg.num_hidden_layers
    if model_cfg.num_attention_heads > 0:
        out["num_attention_heads"] = model_cfg.num_attention_heads
    if model_cfg.hidden_act and model_type in model_cfg.hidden_act_families:
        out["hidden_act"] = model_cfg.hidden_act
    if model_cfg.hidden_dropout_prob >= 0:
        out["hidden_dropout_prob"] = model_cfg.hidden_dropout_prob
        if model_type in model_cfg.attention_dropout_families:
            out["attention_probs_dropout_prob"] = model_cfg.hidden_dropout_prob
    return out


def model_type(name: str) -> str:
    """The `model_type` of a checkpoint folder, alias or hub name (its config.json)."""
    return weights.read_config(weights.resolve_checkpoint(name))["model_type"]


def text_task(
    config,
    prep: data.Prepared,
    keys: dict,
    *,
    loss_fn: Callable = steps.classification_loss,
    extra_inputs: Callable[[dict], dict] | None = None,
) -> recipe.Task:
    """The recipe task that fine-tunes `config.model.name` on `prep`.

    Args:
      config: a stage config with `model`, `data` blocks, `seed` and `protocol`.
      prep: the prepared data (its tokenizer decides the vocabulary growth).
      keys: the run's keys by purpose (mh3.train.recipe.keys).
      loss_fn: the per-example training loss (mh3.train.steps).
      extra_inputs: batch -> batch, applied to every host batch (e.g. adds teacher logits).
    """
    ds, tok = prep.dataset, prep.tokenizer
    data.check_trainable(ds)
    model, params = weights.from_hf(
        config.model.name,
        num_labels=len(ds.classes),
        seed=recipe.key_seed(keys["init"]),
        dtype=weights.DTYPES[config.model.compute_dtype],
        **overrides(config.model, model_type(config.model.name)),
    )
    model, params = weights.grow_vocab(
        model, params, tok.vocab_size, seed=recipe.key_seed(keys["vocab"])
    )
    logging.info("%s: %d added tokens, max_len %d", config.model.name, tok.num_added, prep.max_len)
    proc = dict(process_index=parallel.process_index(), process_count=parallel.process_count())

    def batches(split: str, *, train: bool, epoch: int = 0):
        size = config.data.batch_size if train else config.data.eval_batch_size
        out = prep.batches(split, size, train=train, seed=config.seed, epoch=epoch,
                           group_batches=config.data.group_batches, **proc)  # fmt: skip
        return map(extra_inputs, out) if extra_inputs else out

    def save(folder: str, trained) -> None:
        export.save_text_model(
            folder, model, trained, tok, classes=ds.classes, max_len=prep.max_len,
            protocol=config.protocol, data_fingerprint=ds.fingerprint,
        )  # fmt: skip

    return recipe.Task(
        model=model,
        params=params,
        batches=batches,
        sizes={s: len(prep.encoded[s].labels) for s in data.SPLITS},
        classes=list(ds.classes),
        loss_fn=loss_fn,
        eval_loss_fn=steps.classification_loss,
        save=save,
        ids=[e.id for e in ds.examples],
        title=ds.name,
    )
