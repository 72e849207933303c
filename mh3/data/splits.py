"""Train/validation/test splits: the paper's rule and a stratified one, both seeded.

- `paper_split` is the notebooks' rule exactly: `np.random.seed(123)`, then
  `np.random.choice(np.arange(n), int(0.9 * n), replace=False)` are train, in the order
  `choice` returns them (what `df.iloc[idx]` gives); the rest, in file order, are validation.
  SDCNL: 1,516 -> 1,364 / 152.
- `clean_split` is scikit-learn's stratified `train_test_split` with a seed; both parts keep
  file order. It also draws a test split for datasets that ship none (SAD, IdenDep).
"""

import numpy as np
from absl import logging
from sklearn.model_selection import train_test_split


def paper_split(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, val) positions into a pool of `n` rows by the paper's rule (see module doc)."""
    # The legacy global-state generator is what `np.random.seed` + `np.random.choice` used;
    # a RandomState with the same seed draws the same numbers without touching global state.
    train = np.random.RandomState(seed).choice(np.arange(n), int((1 - fraction) * n), replace=False)
    val = np.setdiff1d(np.arange(n), train)
    return train, val


def clean_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(keep, held-out) positions, stratified by label, seeded; each part in file order.

    The held-out part has `ceil(fraction * n)` rows (scikit-learn's rounding). Stratification
    falls back to a plain seeded split, with a warning, when a class has a single row.
    """
    positions = np.arange(len(labels))
    if len(labels) < 2 or fraction <= 0:
        return positions, positions[:0]
    present = np.bincount(labels)[np.unique(labels)]
    stratify = labels if present.min() >= 2 else None
    if stratify is None:
        logging.warning("a class has fewer than 2 rows: splitting without stratification")
    try:
        keep, held = train_test_split(
            positions, test_size=fraction, random_state=seed, stratify=stratify
        )
    except ValueError:
        # Too few rows per class for the held-out size: a plain seeded split still works.
        logging.warning("stratified split impossible at this size; splitting without it")
        keep, held = train_test_split(positions, test_size=fraction, random_state=seed)
    return np.sort(keep), np.sort(held)
