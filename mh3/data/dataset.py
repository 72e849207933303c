"""Examples in the global order every stage shares: `load_dataset(cfg) -> Dataset`.

The pipeline: read rows (mh3.data.registry), map labels, preprocess texts, check ids, split
(mh3.data.splits), order train, val, test. `examples[i].index == i` is the global index:
later stages name files by it (`Sample_{i}.wav`) and `Dataset.fingerprint` changes whenever
anything that index points to changes, so a cache can tell it is stale.
"""

import collections
import dataclasses
import hashlib

import numpy as np
from absl import logging

from mh3.data import preprocess as pre
from mh3.data import registry, splits
from mh3.errors import UserError

SPLITS = ("train", "val", "test")


@dataclasses.dataclass(frozen=True)
class Example:
    """One post. `text` is preprocessed (SPEC Stage 0); `raw` is as read from the file."""

    id: str
    text: str
    raw: str
    label: int
    split: str
    index: int


@dataclasses.dataclass(frozen=True)
class Dataset:
    """A dataset in global order (train, val, test), with class names in label order."""

    name: str
    classes: tuple[str, ...]
    examples: tuple[Example, ...]
    synthetic: bool

    def split(self, name: str) -> list[Example]:
        """The examples of one split ('train', 'val' or 'test'), in global order."""
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; one of {SPLITS}")
        return [e for e in self.examples if e.split == name]

    @property
    def fingerprint(self) -> str:
        """A hash of every (index, id, split, label, text): equal iff the data is the same."""
        h = hashlib.sha256()
        for e in self.examples:
            h.update(f"{e.index}\t{e.id}\t{e.split}\t{e.label}\t{e.text}\n".encode())
        return h.hexdigest()[:16]

    def summary(self) -> dict:
        """The DESIGN contract block: {train, val, test, classes, per_class: {split: {class: n}}}
        (counts per split, class names in label order, counts per split and class)."""
        counts = collections.Counter((e.split, e.label) for e in self.examples)
        out = {s: sum(counts[s, c] for c in range(len(self.classes))) for s in SPLITS}
        out["classes"] = list(self.classes)
        out["per_class"] = {
            s: {name: counts[s, c] for c, name in enumerate(self.classes)} for s in SPLITS
        }
        return out


def check_trainable(dataset: Dataset) -> None:
    """Refuses a training split with fewer than 2 classes; warns about such a val/test split
    (its per-class metrics and ROC-AUC are undefined). Every classifier stage calls it.

    Raises:
      UserError: the training split holds fewer than 2 classes.
    """
    for split in SPLITS:
        present = sorted({e.label for e in dataset.examples if e.split == split})
        if len(present) >= 2 or not any(e.split == split for e in dataset.examples):
            continue
        if split == "train":
            raise UserError(
                f"dataset {dataset.name}: the training split has {len(present)} class(es) "
                f"({[dataset.classes[i] for i in present]}); a classifier needs at least 2"
            )
        logging.warning("dataset %s: the %s split has only %d class(es); its per-class "
                        "metrics and ROC-AUC are undefined", dataset.name, split, len(present))  # fmt: skip


def _norm_label(value: str) -> str:
    # Pandas writes integer labels of a column with gaps as "1.0"; they mean "1".
    value = value.strip()
    head, dot, tail = value.partition(".")
    if dot and head.lstrip("-").isdigit() and tail and set(tail) == {"0"}:
        return head
    return value


def _label_table(cfg, rows) -> tuple[tuple[str, ...], dict[str, int]]:
    values = [_norm_label(v) for v in cfg.label_values]
    classes = tuple(cfg.classes)
    if not values:
        # Generic files without declared classes: the sorted label values seen in train.
        seen = {_norm_label(r.label) for r in rows if r.split == "train"}
        numeric = all(v.lstrip("-").isdigit() for v in seen)
        values = sorted(seen, key=int if numeric else str)
        classes = classes or tuple(values)
        logging.info("classes from the train labels, in sorted order: %s", values)
    if len(classes) != len(values):
        raise UserError(
            f"data.classes has {len(classes)} names but data.label_values has {len(values)}; "
            "give one class name per label value"
        )
    return classes, {v: i for i, v in enumerate(values)}


def _order(cfg, pool: list, labels: np.ndarray) -> tuple[list[int], list[int]]:
    """(train, val) positions into the train pool, by the configured split rule."""
    if cfg.split == "paper":
        train, val = splits.paper_split(len(pool), cfg.val_fraction, cfg.split_seed)
    elif cfg.split == "clean":
        train, val = splits.clean_split(labels, cfg.val_fraction, cfg.split_seed)
    else:
        raise UserError(f"data.split={cfg.split!r}; choose paper or clean")
    return list(train), list(val)


def load_dataset(cfg) -> Dataset:
    """Loads, preprocesses and splits the dataset described by a `data` config block.

    Args:
      cfg: the `data` block of a stage config (configs/common.data_config).

    Returns:
      The Dataset in global order: train, val, test.

    Raises:
      UserError: a missing folder, file or column, an unknown label, an empty text (unless
        `data.empty_text='drop'`), undecodable bytes, duplicate ids, an unknown dataset name.
    """
    rows = registry.load_rows(cfg)
    classes, label_of = _label_table(cfg, rows)
    kept, dropped, seen = [], 0, {}
    for row in rows:
        value = _norm_label(row.label)
        if value not in label_of:
            raise UserError(
                f"{row.where}: label {row.label!r} is not one of {list(label_of)}; "
                "fix the row or set data.classes / data.label_values"
            )
        text = pre.preprocess(row.raw)
        if not text:
            if cfg.empty_text != "drop":
                raise UserError(
                    f"{row.where}: the text is empty or only whitespace; remove the row or set "
                    "--config.data.empty_text=drop to skip such rows"
                )
            dropped += 1
            continue
        if row.id in seen:
            raise UserError(
                f"{row.where}: id {row.id!r} already used at {seen[row.id]}; ids must be unique"
            )
        seen[row.id] = row.where
        kept.append((row, text, label_of[value]))
    if dropped:
        logging.warning("dropped %d rows with empty text (data.empty_text=drop)", dropped)

    by_split = {s: [k for k in kept if k[0].split == s] for s in SPLITS}
    if not by_split["train"]:
        raise UserError(f"dataset {cfg.name}: no training rows were read from {cfg.path!r}")
    if not by_split["test"]:
        # No test file (SAD, IdenDep): hold out a stratified, seeded test split first.
        pool = by_split["train"]
        keep, held = splits.clean_split(
            np.array([k[2] for k in pool]), cfg.test_fraction, cfg.split_seed
        )
        by_split["train"], by_split["test"] = [pool[i] for i in keep], [pool[i] for i in held]
    if not by_split["val"]:
        pool = by_split["train"]
        train, val = _order(cfg, pool, np.array([k[2] for k in pool]))
        by_split["train"], by_split["val"] = [pool[i] for i in train], [pool[i] for i in val]
    if cfg.max_per_split:
        # Evenly spaced rows rather than the first ones: file order is often sorted by class.
        n = cfg.max_per_split
        by_split = {s: v[:: max(1, len(v) // n)][:n] for s, v in by_split.items()}

    examples = []
    for split in SPLITS:
        for row, text, label in by_split[split]:
            examples.append(Example(row.id, text, row.raw, label, split, len(examples)))
    dataset = Dataset(cfg.name, classes, tuple(examples), synthetic=cfg.format == "demo")
    if dataset.synthetic:
        logging.warning("dataset 'demo' is SYNTHETIC (generated by mh3.data.demo), not real posts")
    return dataset
