"""Everything a training stage needs from the data block in one call: `prepare(cfg)`.

Also `token_stats`, what the data stage reports about lengths and padding.
"""

import dataclasses

import numpy as np

from mh3.data import batching
from mh3.data.dataset import SPLITS, Dataset, load_dataset
from mh3.data.tokenize import Encoded, Tokenizer, build_tokenizer, encode, max_len_for


@dataclasses.dataclass(frozen=True)
class Prepared:
    """A dataset, its tokenizer, and every split encoded with one max_len and bucket table."""

    dataset: Dataset
    tokenizer: Tokenizer
    max_len: int
    encoded: dict  # split -> Encoded
    buckets: tuple | None  # padded lengths, None = pad every batch to max_len

    def batches(self, split: str, batch_size: int, **kwargs):
        """`mh3.data.batches` over one split with this tokenizer's pad id and buckets."""
        return batching.batches(
            self.encoded[split], batch_size, pad_id=self.tokenizer.pad_id,
            buckets=self.buckets, **kwargs,
        )  # fmt: skip


def prepare(cfg, dataset: Dataset | None = None, tokenizer: Tokenizer | None = None) -> Prepared:
    """Loads (unless given), tokenises and encodes the data of a `data` config block.

    Args:
      cfg: the `data` block (configs/common.data_config).
      dataset: an already loaded Dataset, or None to load it.
      tokenizer: a tokenizer to use as is (e.g. a teacher's saved one), or None to build one
        from `cfg.tokenizer` with the tokens of `cfg.added_token_splits`.
    """
    dataset = dataset or load_dataset(cfg)
    tokenizer = tokenizer or build_tokenizer(
        cfg.tokenizer, dataset, splits=tuple(cfg.added_token_splits)
    )
    max_len = max_len_for(tokenizer, dataset.split("train"), cfg.max_len)
    encoded = {s: encode(tokenizer, dataset.split(s), max_len) for s in SPLITS}
    buckets = None
    if cfg.bucketing:
        buckets = batching.bucket_lengths(
            encoded["train"].lengths, max_len, cfg.num_buckets, cfg.bucket_multiple
        )
    return Prepared(dataset, tokenizer, max_len, encoded, buckets)


def _percentiles(lengths: np.ndarray) -> dict:
    if len(lengths) == 0:
        return {}
    qs = (50, 90, 95, 99)
    out = {f"p{q}": round(float(np.percentile(lengths, q)), 1) for q in qs}
    out.update(min=int(lengths.min()), mean=round(float(lengths.mean()), 2), max=int(lengths.max()))
    return out


def token_stats(prep: Prepared, cfg, seed: int) -> dict:
    """Length percentiles, padded tokens per epoch with and without bucketing, batch shapes."""
    train: Encoded = prep.encoded["train"]
    buckets = prep.buckets if prep.buckets is not None else (prep.max_len,)
    epoch = batching.padding_stats(
        train.lengths, cfg.batch_size, buckets=buckets, max_len=prep.max_len, train=True,
        group_batches=cfg.group_batches, seed=seed,
    )  # fmt: skip
    shapes = set(map(tuple, epoch["shapes"]))
    eval_shapes = set()
    for split in ("val", "test"):
        s = batching.padding_stats(
            prep.encoded[split].lengths, cfg.eval_batch_size, buckets=buckets,
            max_len=prep.max_len, train=False,
        )  # fmt: skip
        eval_shapes |= set(map(tuple, s["shapes"]))
    return {
        "max_len": prep.max_len,
        "buckets": list(buckets),
        "lengths": {s: _percentiles(prep.encoded[s].full_lengths) for s in SPLITS},
        "truncated": {s: int((prep.encoded[s].full_lengths > prep.max_len).sum()) for s in SPLITS},
        "train_epoch_tokens": {
            "real": epoch["real"],
            "padded_bucketed": epoch["bucketed"],
            "padded_max_len": epoch["max_len"],
            "reduction": round(epoch["max_len"] / max(epoch["bucketed"], 1), 3),
        },
        "distinct_shapes": {
            "train": len(shapes),
            "eval": len(eval_shapes),
            "all": len(shapes | eval_shapes),
            "list": sorted(shapes | eval_shapes),
        },
    }
