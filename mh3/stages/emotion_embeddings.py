"""The MM-EMOG stage (SPEC stage 2): lexicon targets -> BERT from scratch -> embedding table.

1. Load the dataset and its tokenizer (added tokens included) the way every stage does.
2. Multi-hot targets per document from the lexicon (mh3.data.lexicon).
3. The vocabulary rule: pieces seen at least `min_freq` times (documents cut to 512 pieces);
   other pieces become [UNK]. The encoder's vocabulary is exactly this set.
4. Train a randomly initialised BERT-shaped encoder ([CLS] pooler -> dropout -> linear) with
   BCE on the targets, validation loss each epoch, early stopping.
5. Export its word-embedding table as `{vocab_map, weights}` (`table.npz`).
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
from mh3.train import checkpoints, loop, optim, parallel, steps
from mh3.train import state as state_lib
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


def _remapped(encoded, rows: np.ndarray):
    """The same examples with tokenizer ids turned into vocabulary rows."""
    return dataclasses.replace(encoded, ids=tuple(rows[ids] for ids in encoded.ids))


def _with_targets(batches, targets: np.ndarray):
    for batch in batches:
        # Padding rows have index -1; their targets are masked out of every loss.
        batch["label"] = targets[np.maximum(batch["index"], 0)]
        yield batch


def run(config, workdir: str) -> dict:
    # The lexicon first: a bad lexicon file fails before any slow work.
    lexicon = lexicon_lib.load_lexicon(config.emotion.lexicon, config.emotion.lexicon_format)
    cfg = config.data
    dataset = data.load_dataset(cfg)
    tokenizer = data.build_tokenizer(cfg.tokenizer, dataset, splits=tuple(cfg.added_token_splits))
    texts = [e.text for e in dataset.examples]
    targets = lexicon_lib.targets(texts, lexicon)
    logging.info("lexicon %s: %d entries, labels %s", lexicon.source, len(lexicon), lexicon.labels)

    corpus = [e.text for s in config.emotion.vocab_splits for e in dataset.split(s)]
    vocab_map = lexicon_lib.build_vocab(
        tokenizer.hf,
        corpus,
        max_pieces=config.emotion.max_pieces,
        min_freq=config.emotion.min_freq,
    )
    rows = lexicon_lib.remap(vocab_map, tokenizer.hf)
    logging.info("MM-EMOG vocabulary: %d of %d pieces", len(vocab_map), len(tokenizer.hf))

    max_len = data.max_len_for(tokenizer, dataset.split("train"), cfg.max_len)
    encoded = {
        s: _remapped(data.encode(tokenizer, dataset.split(s), max_len), rows) for s in data.SPLITS
    }
    buckets = None
    if cfg.bucketing:
        buckets = data.bucket_lengths(
            encoded["train"].lengths, max_len, cfg.num_buckets, cfg.bucket_multiple
        )
    pad = int(rows[tokenizer.pad_id])

    enc = config.encoder
    model = BertClassifier(
        BertConfig(
            family="bert",
            vocab_size=len(vocab_map),
            hidden_size=enc.hidden_size,
            num_hidden_layers=enc.num_hidden_layers,
            num_attention_heads=enc.num_attention_heads,
            intermediate_size=enc.intermediate_size,
            hidden_act=enc.hidden_act,
            hidden_dropout_prob=enc.hidden_dropout_prob,
            attention_probs_dropout_prob=enc.attention_probs_dropout_prob,
            classifier_dropout=enc.classifier_dropout,
            max_position_embeddings=enc.max_position_embeddings,
            pad_token_id=pad,
            num_labels=len(lexicon.labels),
            pooler=True,
        )
    )
    key = jax.random.PRNGKey(config.seed)
    example = {"input_ids": jnp.zeros((1, 8), jnp.int32)}
    params = jax.jit(model.init)(key, example)["params"]

    def batches(split, *, train, epoch=0):
        size = cfg.batch_size if train else cfg.eval_batch_size
        raw = data.batches(
            encoded[split],
            size,
            pad_id=pad,
            train=train,
            seed=config.seed,
            epoch=epoch,
            buckets=buckets,
            group_batches=cfg.group_batches,
            process_index=parallel.process_index(),
            process_count=parallel.process_count(),
        )
        return _with_targets(raw, targets)

    steps_per_epoch = data.num_batches(
        len(encoded["train"].ids), cfg.batch_size, parallel.process_count()
    )
    total = config.train.num_steps or config.train.epochs * steps_per_epoch
    state = state_lib.create(
        model.apply, params, optim.make(config.optim, total), jax.random.fold_in(key, 1)
    )
    has_val = len(encoded["val"].ids) > 0
    state, history = loop.fit(
        state,
        loss_fn=bce_loss,
        train_batches=lambda epoch: batches("train", train=True, epoch=epoch),
        steps_per_epoch=steps_per_epoch,
        val_batches=(lambda: batches("val", train=False)) if has_val else None,
        train_config=config.train,
        workdir=workdir,
        fingerprint=checkpoints.fingerprint(config),
    )

    pstate = parallel.replicate(state)
    p_eval = parallel.pmap(functools.partial(steps.eval_step, loss_fn=bce_loss))
    results = {"data": dataset.summary()}
    for split in ("val", "test"):
        if not len(encoded[split].ids):
            continue
        out = loop.evaluate(pstate, p_eval, batches(split, train=False))
        real = out["mask"] > 0
        scores = multilabel_metrics(out["logits"][real, :, 0], out["labels"][real], lexicon.labels)
        results[split] = {"loss": out["loss"], **scores}

    table_path = os.path.join(workdir, "table.npz")
    weights = np.asarray(state.params["embeddings"]["word_embeddings"]["embedding"])
    mmemog.save(table_path, vocab_map, weights)
    results.update(
        table=table_path,
        table_shape=list(weights.shape),
        epochs=len(history),
        emotion={
            "task": "multi-label lexicon emotions (val/test metrics are for this task)",
            "lexicon": lexicon.source,
            "lexicon_kind": lexicon.kind,
            "lexicon_entries": len(lexicon),
            "labels": list(lexicon.labels),
            "positive_rate": {
                s: dict(
                    zip(
                        lexicon.labels,
                        [round(float(x), 4) for x in targets[encoded[s].index].mean(0)],
                        strict=True,
                    )
                )
                for s in data.SPLITS
                if len(encoded[s].ids)
            },
            "vocab_size": len(vocab_map),
            "tokenizer_size": len(tokenizer.hf),
        },
    )
    return results
