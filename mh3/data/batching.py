"""Numpy batches: fixed batch size, a few fixed lengths, per-epoch shuffles, multi-host shards.

A batch is a dict of int32 arrays with Hugging Face key names plus three of ours:
`input_ids`, `attention_mask`, `token_type_ids` (B, L); `label` (B,); `mask` (B,): 1 for a real
example, 0 for a padding row; `index` (B,): the global example index, -1 on padding rows.
Padding rows fill the last batch (nothing is dropped, in training or evaluation); losses and
metrics must weight rows by `mask`. A padding row attends to its first position only, so no
row is fully masked (a softmax over only masked positions gives NaN with -inf biases).

Shapes. With bucketing, every batch is padded to the smallest of a few fixed lengths
(`bucket_lengths`, from train-length quantiles) that holds its longest row, and training
batches are drawn from length-sorted windows of `group_batches` batches, so jit compiles at most
`len(buckets)` shapes while padding falls. Without it, every batch is padded to `max_len`.
`group_batches=0` is the notebooks' loop (protocol=paper): one uniform permutation per epoch
cut into consecutive batches, the short batch last, as torch's shuffling DataLoader does
(batches are still padded to bucket lengths).

Order and processes. `batch_size` is global: every process computes the same plan of global
batches from (seed, epoch) alone and, with `process_count` P, reads the p-th of P equal slices
of each, so the k-th local batches of all processes form the k-th global batch and share its
length. The global batches do not depend on P: a run on 2 processes with one device each sees
the very batches of a run on 1 process with 2 devices (device d of the one gets the rows
process d of the other reads), and ends with the same parameters. A resumed run replays the
same batches. Evaluation is not shuffled: rows are taken in length order (bucketing) or in
global order.
"""

from collections.abc import Iterator

import numpy as np

from mh3.errors import UserError


def bucket_lengths(lengths: np.ndarray, max_len: int, num_buckets: int, multiple: int) -> tuple:
    """At most `num_buckets` padded lengths (multiples of `multiple`, and max_len) chosen to
    minimise the padded tokens of `lengths`, each padded to the smallest length that holds it.

    An exact dynamic programme over the candidate lengths (at most max_len / multiple of them),
    so the table adapts to each dataset's length distribution and is the same on every run.
    """
    lengths = np.minimum(np.asarray(lengths, np.int64), max_len)
    if len(lengths) == 0 or num_buckets <= 1:
        return (max_len,)
    rounded = np.minimum(-(-lengths // multiple) * multiple, max_len)
    cands, counts = np.unique(np.append(rounded, max_len), return_counts=True)
    counts[-1] -= 1  # the appended max_len is a candidate, not an example
    prefix = np.concatenate([[0], np.cumsum(counts)])
    m, k_max = len(cands), min(num_buckets, len(cands))
    # best[k][j]: least tokens for the examples up to cands[j] with k buckets, the last at j.
    best = np.full((k_max + 1, m), np.inf)
    back = np.zeros((k_max + 1, m), np.int64)
    best[1] = cands * prefix[1:]
    for k in range(2, k_max + 1):
        for j in range(k - 1, m):
            costs = best[k - 1, :j] + cands[j] * (prefix[j + 1] - prefix[1 : j + 1])
            back[k, j] = int(np.argmin(costs))
            best[k, j] = costs[back[k, j]]
    k = int(np.argmin(best[1:, m - 1])) + 1
    chosen, j = [], m - 1
    while k >= 1:
        chosen.append(int(cands[j]))
        j, k = back[k, j], k - 1
    return tuple(sorted(chosen))


def plan(
    lengths: np.ndarray,
    batch_size: int,
    *,
    train: bool,
    seed: int,
    epoch: int,
    process_count: int = 1,
    buckets: tuple | None = None,
    max_len: int,
    group_batches: int = 50,
) -> tuple[np.ndarray, np.ndarray]:
    """The batches of one epoch, without touching token ids.

    Returns:
      rows: (num_batches, process_count, batch_size // process_count) positions into the
        encoded examples, -1 for padding rows; process p reads `rows[:, p]`.
      seq_lens: (num_batches,) the padded length of each batch.
    """
    if batch_size % process_count:
        raise UserError(
            f"data.batch_size={batch_size} is not divisible by the {process_count} processes"
        )
    local = batch_size // process_count
    lengths = np.minimum(np.asarray(lengths, np.int64), max_len)
    n = len(lengths)
    order = np.arange(n)
    if not train and buckets is not None:
        order = np.argsort(lengths, kind="stable")
    num_batches = -(-n // batch_size)
    if train:
        # The trailing 0 keeps the shuffles of runs made before plans ignored process_count.
        order = np.random.default_rng([seed, epoch, 0]).permutation(order)
    order = np.concatenate([order, np.full(num_batches * batch_size - n, -1)])
    if train and buckets is not None and group_batches > 0:
        # Sort each window by length (longest first, padding rows last), so a batch holds
        # similar lengths.
        window = group_batches * batch_size
        for start in range(0, len(order), window):
            part = order[start : start + window]
            keys = np.where(part >= 0, lengths[np.maximum(part, 0)], -1)
            order[start : start + window] = part[np.argsort(-keys, kind="stable")]
    rows = order.reshape(num_batches, process_count, local)
    if train and group_batches > 0:
        # Grouped windows put long batches together; a shuffled batch order spreads them.
        # Ungrouped (0), the permutation already is the order, as in a torch DataLoader.
        rows = rows[np.random.default_rng([seed, epoch]).permutation(num_batches)]
    safe = lengths[np.maximum(rows, 0)] if n else np.zeros(rows.shape, np.int64)
    longest = np.where(rows >= 0, safe, 0).max(axis=(1, 2), initial=1)
    if buckets is None:
        seq_lens = np.full(num_batches, max_len)
    else:
        table = np.asarray(sorted(buckets))
        seq_lens = table[np.minimum(np.searchsorted(table, longest), len(table) - 1)]
    return rows, seq_lens.astype(np.int64)


def collate(encoded, positions: np.ndarray, seq_len: int, pad_id: int) -> dict:
    """One batch dict (see the module docstring) for `positions` (-1 = padding row)."""
    size = len(positions)
    batch = {
        "input_ids": np.full((size, seq_len), pad_id, np.int32),
        "attention_mask": np.zeros((size, seq_len), np.int32),
        "token_type_ids": np.zeros((size, seq_len), np.int32),
        "label": np.zeros(size, np.int32),
        "mask": np.zeros(size, np.int32),
        "index": np.full(size, -1, np.int32),
    }
    for r, pos in enumerate(positions):
        if pos < 0:
            batch["attention_mask"][r, 0] = 1
            continue
        ids = encoded.ids[pos][:seq_len]
        batch["input_ids"][r, : len(ids)] = ids
        batch["attention_mask"][r, : len(ids)] = 1
        batch["label"][r] = encoded.labels[pos]
        batch["mask"][r] = 1
        batch["index"][r] = encoded.index[pos]
    return batch


def batches(
    encoded,
    batch_size: int,
    *,
    pad_id: int,
    train: bool,
    seed: int = 0,
    epoch: int = 0,
    process_index: int = 0,
    process_count: int = 1,
    buckets: tuple | None = None,
    group_batches: int = 50,
) -> Iterator[dict]:
    """Yields this process's batches of one epoch (see the module docstring).

    Args:
      encoded: a mh3.data.Encoded (token ids, labels, global indices).
      batch_size: the global batch size (all processes together).
      pad_id: the tokenizer's pad id.
      train: shuffle (per epoch) and group by length; False: a fixed order, for evaluation.
      seed, epoch: the shuffle's seeds.
      process_index, process_count: this process and how many read the same global batches.
      buckets: the fixed padded lengths (`bucket_lengths`), or None to pad to max_len.
      group_batches: training with buckets: length-sort windows of this many batches; 0 = a
        uniform shuffle cut into consecutive batches (the notebooks').
    """
    rows, seq_lens = plan(
        encoded.lengths, batch_size, train=train, seed=seed, epoch=epoch,
        process_count=process_count, buckets=buckets, max_len=encoded.max_len,
        group_batches=group_batches,
    )  # fmt: skip
    for k in range(len(rows)):
        yield collate(encoded, rows[k, process_index], int(seq_lens[k]), pad_id)


def num_batches(n: int, batch_size: int, process_count: int = 1) -> int:
    """How many batches `batches` yields per epoch for `n` examples (on every process: the
    global batches do not depend on `process_count`, kept for the callers' symmetry)."""
    del process_count
    return -(-n // batch_size)


def padding_stats(lengths, batch_size, *, buckets, max_len, train, group_batches=50, seed=0):
    """Token slots of one epoch's batches with the given buckets and padded to max_len.

    Returns:
      {'real': tokens that are not padding, 'bucketed': slots with bucketing, 'max_len': slots
      padding every batch to max_len, 'shapes': sorted distinct (batch, length) shapes}.
    """
    rows, seq = plan(
        lengths, batch_size, train=train, seed=seed, epoch=0, buckets=buckets,
        max_len=max_len, group_batches=group_batches,
    )  # fmt: skip
    return {
        "real": int(np.minimum(np.asarray(lengths), max_len).sum()),
        "bucketed": int(seq.sum() * batch_size),
        "max_len": int(len(rows) * batch_size * max_len),
        "shapes": sorted({(batch_size, int(s)) for s in seq}),
    }
