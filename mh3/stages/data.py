"""The `data` stage: load, preprocess, split and tokenise a dataset, and report on it.

Writes into the workdir: `results.json` (the DESIGN `data` block, token statistics, tokenizer
facts, the dataset fingerprint), `order.csv` (the global order: index, id, split, label, class;
audio files `Sample_{index}.wav` follow it) and `tokenizer/` (with the added tokens).
"""

import csv
import os

from mh3 import data, files
from mh3.data.prepare import token_stats


def _write_order(path: str, dataset) -> None:
    def write(tmp):
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            out = csv.writer(f)
            out.writerow(["index", "id", "split", "label", "class"])
            for e in dataset.examples:
                out.writerow([e.index, e.id, e.split, e.label, dataset.classes[e.label]])

    files.atomic_write(path, write)


def run(config, workdir: str) -> dict:
    """Runs the data stage (see the module docstring); returns the results dict."""
    prep = data.prepare(config.data)
    ds, tok = prep.dataset, prep.tokenizer
    _write_order(os.path.join(workdir, "order.csv"), ds)
    tok.save(os.path.join(workdir, "tokenizer"))
    stats = token_stats(prep, config.data, config.seed)
    results = {
        "data": ds.summary(),
        "synthetic": ds.synthetic,
        "fingerprint": ds.fingerprint,
        "tokenizer": {
            "name": config.data.tokenizer,
            "base_vocab_size": tok.base_vocab_size,
            "vocab_size": tok.vocab_size,
            "num_added": tok.num_added,
            "added": list(tok.added),
        },
        "tokens": stats,
        "order": "order.csv",
        "tokenizer_dir": "tokenizer",
    }
    s, t = results["data"], stats["train_epoch_tokens"]
    lines = [
        f"dataset {ds.name}{' (SYNTHETIC demo data)' if ds.synthetic else ''}: "
        f"train {s['train']}, val {s['val']}, test {s['test']}; classes {s['classes']}",
        *(f"  {split}: {s['per_class'][split]}" for split in data.SPLITS),
        f"tokenizer {config.data.tokenizer}: {tok.num_added} added tokens, vocab {tok.vocab_size}",
        f"max_len {stats['max_len']}; train lengths {stats['lengths']['train']}",
        f"train tokens per epoch: real {t['real']}, padded with buckets {stats['buckets']} "
        f"{t['padded_bucketed']}, padded to max_len {t['padded_max_len']} "
        f"({t['reduction']}x fewer with buckets)",
        f"distinct batch shapes: {stats['distinct_shapes']['all']} "
        f"(train {stats['distinct_shapes']['train']}, eval {stats['distinct_shapes']['eval']})",
    ]
    print("\n".join(lines))
    return results
