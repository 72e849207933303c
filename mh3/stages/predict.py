"""The predict stage: label the posts of a file with a saved model (`predictions.csv`).

Reads `config.input` (CSV/JSONL with `config.text_column`, or a .txt with one post per line),
runs `mh3.load(config.model).predict` over every post (the training-time preprocessing is
applied inside) and writes `<workdir>/predictions.csv` in one atomic step.
"""

import csv
import os

import numpy as np

from mh3 import files, saved_model
from mh3.data import readers
from mh3.errors import UserError


def read_inputs(config) -> tuple[list[str], list[str]]:
    """(ids, posts) of the input file; one UserError line for a missing file, column or post."""
    path = config.input
    if not path:
        raise UserError("no input file; pass --config.input=FILE (.csv, .jsonl or .txt)")
    readers.require_file(path, "the posts to label")
    ext = os.path.splitext(path)[1].lower()
    if ext == ".txt":
        lines = readers.read_text(path, config.encoding).splitlines()
        rows = [(str(n), line) for n, line in enumerate(lines, start=1) if line.strip()]
    elif ext in (".csv", ".jsonl"):
        read = readers.read_csv if ext == ".csv" else readers.read_jsonl
        columns = [config.text_column] + ([config.id_column] if config.id_column else [])
        hint = "set --config.text_column (and --config.id_column) to the file's column names"
        table = read(path, columns, config.encoding, hint)
        rows = [
            (r[config.id_column] if config.id_column else str(n), r[config.text_column])
            for n, (_, r) in enumerate(table, start=1)
        ]
    else:
        raise UserError(f"{path}: unknown input type {ext!r}; use .csv, .jsonl or .txt")
    if not rows or not any(text.strip() for _, text in rows):
        raise UserError(f"{path}: no posts to label; the file holds no non-empty {ext} rows")
    return [i for i, _ in rows], [t for _, t in rows]


def write_table(path: str, ids, probs: np.ndarray, classes) -> None:
    """`id, predicted, p_<class>...` rows, written atomically."""

    def write(tmp):
        with open(tmp, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["id", "predicted", *(f"p_{c}" for c in classes)])
            for row_id, p in zip(ids, probs, strict=True):
                w.writerow([row_id, classes[int(p.argmax())], *(f"{x:.6f}" for x in p)])

    files.atomic_write(path, write)


def run(config, workdir: str) -> dict:
    predictor = saved_model.load(config.model)
    ids, posts = read_inputs(config)
    probs = predictor.predict(posts)
    path = os.path.join(workdir, "predictions.csv")
    write_table(path, ids, probs, predictor.classes)
    counts = np.bincount(probs.argmax(-1), minlength=len(predictor.classes))
    print(f"predictions: {path} ({len(ids)} posts)")
    return {
        "model": config.model,
        "kind": predictor.kind,
        "input": config.input,
        "n": len(ids),
        "predicted_counts": dict(zip(predictor.classes, counts.tolist(), strict=True)),
        "predictions": path,
    }
