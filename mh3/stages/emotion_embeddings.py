"""The MM-EMOG stage (SPEC stage 2): lexicon targets -> BERT from scratch -> embedding table.

1. Load the dataset and its tokenizer (added tokens included) the way every stage does.
2. Multi-hot targets per document from the lexicon (mh3.data.lexicon).
3. The vocabulary rule: pieces seen at least `min_freq` times (documents cut to 512 pieces);
   other pieces become [UNK]. The encoder's vocabulary is exactly this set. `min_freq=0` (the
   notebooks') keeps every tokenizer id, so rows are token ids.
4. Train a randomly initialised BERT-shaped encoder ([CLS] pooler -> dropout -> linear) with
   BCE on the targets, validation loss each epoch, early stopping: the shared recipe
   (mh3.train.recipe) does the training and the held-out (multi-label) metrics.
5. Export its word-embedding table as `{vocab_map, weights}` (`table.npz`), the stage's
   product, written by process 0 alone. There is no `model/`: the encoder classifies lexicon
   emotions, not the dataset's classes.
"""

import dataclasses
import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging
from sklearn import metrics as skm

from mh3 import data
from mh3.data import lexicon as lexicon_lib
from mh3.models.bert import BertClassifier, BertConfig
from mh3.train import parallel, recipe
from mh3.weights import mmemog


def bce_loss(params, apply_fn, batch, dropout_rng, train):
    """Per-example BCE with logits, averaged over labels (torch BCEWithLogitsLoss overall).

    `label` holds the multi-hot targets (B, K). The logits go back as (B, K, 1) so the
    training core, which reports accuracy for (B, C) logits with class labels, skips it.
    """
    inputs = {k: v for k, v in batch.items() if k not in ("label", "mask", "index")}
    logits, _ = apply_fn({"params": params}, inputs, train=train, rngs={"dropout": dropout_rng})
    logits = logits.astype(jnp.float32)
    loss = optax.sigmoid_binary_cross_entropy(logits, batch["label"]).mean(-1)
    return loss, {"logits": logits[..., None]}


def multilabel_metrics(logits: np.ndarray, targets: np.ndarray, labels) -> dict:
    """Exact-match accuracy and F1 (macro, weighted, micro, per label) at probability 0.5."""
    pred = (logits > 0).astype(int)
    true = targets.astype(int)
    out = {"accuracy": float(skm.accuracy_score(true, pred))}
    for avg in ("macro", "weighted", "micro"):
        out[f"f1_{avg}"] = float(skm.f1_score(true, pred, average=avg, zero_division=0))
    per = skm.f1_score(true, pred, average=None, zero_division=0)
    out.update({f"f1_{name}": float(f) for name, f in zip(labels, per, strict=True)})
    return out


def held_out_metrics(out: dict, labels) -> dict:
    """`multilabel_metrics` of the real rows of a `loop.evaluate` result (`Task.metrics`)."""
    real = out["mask"] > 0
    return multilabel_metrics(out["logits"][real, :, 0], out["labels"][real], labels)


def vocabulary(emotion_cfg, prep: data.Prepared) -> tuple[dict, dict, int]:
    """The MM-EMOG vocabulary and every split re-encoded in its rows.

    Returns:
      (vocab_map piece -> row, split -> Encoded whose ids are vocabulary rows, the pad row).
    """
    tokenizer = prep.tokenizer.hf
    corpus = [e.text for s in emotion_cfg.vocab_splits for e in prep.dataset.split(s)]
    vocab_map = lexicon_lib.build_vocab(
        tokenizer, corpus, max_pieces=emotion_cfg.max_pieces, min_freq=emotion_cfg.min_freq
    )
    rows = lexicon_lib.remap(vocab_map, tokenizer)
    logging.info("MM-EMOG vocabulary: %d of %d pieces", len(vocab_map), len(tokenizer))
    encoded = {
        s: dataclasses.replace(enc, ids=tuple(rows[ids] for ids in enc.ids))
        for s, enc in prep.encoded.items()
    }
    return vocab_map, encoded, int(rows[prep.tokenizer.pad_id])


def build_encoder(enc, vocab_size: int, pad_id: int, num_labels: int) -> BertClassifier:
    """The BERT-shaped encoder of the `encoder` config block, with a [CLS] pooler."""
    return BertClassifier(
        BertConfig(
            family="bert",
            vocab_size=vocab_size,
            hidden_size=enc.hidden_size,
            num_hidden_layers=enc.num_hidden_layers,
            num_attention_heads=enc.num_attention_heads,
            intermediate_size=enc.intermediate_size,
            hidden_act=enc.hidden_act,
            hidden_dropout_prob=enc.hidden_dropout_prob,
            attention_probs_dropout_prob=enc.attention_probs_dropout_prob,
            classifier_dropout=enc.classifier_dropout,
            max_position_embeddings=enc.max_position_embeddings,
            word_embedding_std=enc.word_embedding_std,
            pad_token_id=pad_id,
            num_labels=num_labels,
            pooler=True,
        )
    )


def split_batches(config, encoded, targets, pad_id, buckets, split, *, train, epoch=0):
    """This process's batches of one split with multi-hot `label`s (`recipe.Task.batches`)."""
    batches = data.batches(
        encoded[split],
        config.data.batch_size if train else config.data.eval_batch_size,
        pad_id=pad_id,
        train=train,
        seed=config.seed,
        epoch=epoch,
        buckets=buckets,
        group_batches=config.data.group_batches,
        process_index=parallel.process_index(),
        process_count=parallel.process_count(),
    )
    for batch in batches:
        # Padding rows have index -1; their targets are masked out of every loss.
        batch["label"] = targets[np.maximum(batch["index"], 0)]
        yield batch


def emotion_report(lexicon, targets, encoded: dict, vocab_size: int, tokenizer_size: int) -> dict:
    """The `emotion` block of results.json: the lexicon task and its positive rates."""
    rates = {
        s: dict(zip(lexicon.labels, np.round(targets[enc.index].mean(0), 4).tolist(), strict=True))
        for s, enc in encoded.items()
        if len(enc.ids)
    }
    return {
        "task": "multi-label lexicon emotions (val/test metrics are for this task)",
        "lexicon": lexicon.source,
        "lexicon_kind": lexicon.kind,
        "lexicon_entries": len(lexicon),
        "labels": list(lexicon.labels),
        "positive_rate": rates,
        "vocab_size": vocab_size,
        "tokenizer_size": tokenizer_size,
    }


def run(config, workdir: str) -> dict:
    # The lexicon first: a bad lexicon file fails before any slow work.
    lexicon = lexicon_lib.load_lexicon(
        config.emotion.lexicon, config.emotion.lexicon_format, other=config.emotion.other_rule
    )
    prep = data.prepare(config.data)
    targets = lexicon_lib.targets([e.text for e in prep.dataset.examples], lexicon)
    logging.info("lexicon %s: %d entries, labels %s", lexicon.source, len(lexicon), lexicon.labels)
    vocab_map, encoded, pad_id = vocabulary(config.emotion, prep)
    model = build_encoder(config.encoder, len(vocab_map), pad_id, len(lexicon.labels))
    keys = recipe.keys(config.seed)
    example = {"input_ids": jnp.zeros((1, 8), jnp.int32)}
    task = recipe.Task(
        model=model,
        params=jax.jit(model.init)(keys["init"], example)["params"],
        batches=functools.partial(split_batches, config, encoded, targets, pad_id, prep.buckets),
        sizes={s: len(encoded[s].ids) for s in data.SPLITS},
        classes=None,
        loss_fn=bce_loss,
        metrics=functools.partial(held_out_metrics, labels=lexicon.labels),
    )
    final, results = recipe.train(config, workdir, task, rng=keys["dropout"])

    table_path = os.path.join(workdir, "table.npz")
    weights = np.asarray(final.params["embeddings"]["word_embeddings"]["embedding"])
    if parallel.process_index() == 0:
        mmemog.save(table_path, vocab_map, weights)
    parallel.sync("mh3-table-saved")
    return {
        "data": prep.dataset.summary(),
        **results,
        "table": table_path,
        "table_shape": list(weights.shape),
        "epochs": len(results["history"]),
        "emotion": emotion_report(
            lexicon, targets, encoded, len(vocab_map), len(prep.tokenizer.hf)
        ),
    }
