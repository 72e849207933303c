"""Classification metrics over a whole split, computed with scikit-learn on the host.

Predictions arrive in padded batches; rows whose `mask` is 0 are dropped before any metric is
computed. Keys follow DESIGN.md: accuracy, f1_macro, f1_weighted, f1_micro, per-class
precision/recall/F1 (`precision_<class>`, ...), roc_auc (binary: positive = class 1;
multi-class: one-vs-rest, macro), confusion_matrix (rows = true, columns = predicted).
"""

from collections.abc import Sequence

import numpy as np
from absl import logging

from mh3 import files

# The scores a run can select its model on (train.select_metric), besides the loss.
SCORES = ("accuracy", "f1_macro", "f1_weighted", "f1_micro")


def classification(
    logits: np.ndarray, labels: np.ndarray, mask: np.ndarray, class_names: Sequence[str]
) -> dict:
    """All metrics of one split.

    Args:
      logits: (N, C) raw scores, padding rows included.
      labels: (N,) integer labels.
      mask: (N,) 1 for real rows, 0 for padding.
      class_names: C names in label order (used for per-class keys).

    Returns:
      A JSON-ready dict of floats and lists.
    """
    from scipy.special import softmax  # here, not at import: the config checks read SCORES
    from sklearn import metrics as skm  # in every process, and sklearn takes a second

    keep = np.asarray(mask).astype(bool)
    logits = np.asarray(logits, np.float64)[keep]
    labels = np.asarray(labels)[keep]
    n_classes = len(class_names)
    pred = logits.argmax(-1)
    order = list(range(n_classes))
    out = {
        "n": int(keep.sum()),
        "accuracy": float(skm.accuracy_score(labels, pred)),
        "f1_macro": float(
            skm.f1_score(labels, pred, average="macro", labels=order, zero_division=0)
        ),
        "f1_weighted": float(
            skm.f1_score(labels, pred, average="weighted", labels=order, zero_division=0)
        ),
        "f1_micro": float(
            skm.f1_score(labels, pred, average="micro", labels=order, zero_division=0)
        ),
    }
    p, r, f, _ = skm.precision_recall_fscore_support(
        labels, pred, labels=order, average=None, zero_division=0
    )
    for i, name in enumerate(class_names):
        out[f"precision_{name}"] = float(p[i])
        out[f"recall_{name}"] = float(r[i])
        out[f"f1_{name}"] = float(f[i])
    probs = softmax(logits, axis=-1)
    out["roc_auc"] = _roc_auc(labels, probs, n_classes)
    out["confusion_matrix"] = skm.confusion_matrix(labels, pred, labels=order).tolist()
    return out


def batch_mean_f1_weighted(
    logits: np.ndarray, labels: np.ndarray, mask: np.ndarray, sizes: Sequence[int]
) -> float:
    """The notebooks' search objective: weighted F1 of each validation batch on its own (over
    the classes present in that batch, sklearn's default), averaged over batches.

    Args:
      logits, labels, mask: as in `classification`, batches concatenated in order.
      sizes: the row count of each batch (padding included), in order.
    """
    from sklearn import metrics as skm

    scores, start = [], 0
    for size in sizes:
        keep = np.asarray(mask[start : start + size]).astype(bool)
        y = np.asarray(labels[start : start + size])[keep]
        pred = np.asarray(logits[start : start + size])[keep].argmax(-1)
        start += size
        if len(y):
            scores.append(skm.f1_score(y, pred, average="weighted", zero_division=0))
    return float(np.mean(scores)) if scores else 0.0


def _roc_auc(labels: np.ndarray, probs: np.ndarray, n_classes: int) -> float | None:
    from sklearn import metrics as skm

    # AUC is undefined when the split lacks a class; report None (JSON null), not NaN.
    if n_classes < 2 or len(np.unique(labels)) < n_classes:
        logging.warning("ROC-AUC undefined: the split has labels of %d of %d classes; null",
                        len(np.unique(labels)), n_classes)  # fmt: skip
        return None
    if n_classes == 2:
        return float(skm.roc_auc_score(labels, probs[:, 1]))
    return float(skm.roc_auc_score(labels, probs, multi_class="ovr", labels=list(range(n_classes))))


def plot_confusion(
    matrix: Sequence[Sequence[int]], class_names: Sequence[str], path: str, title: str
) -> None:
    """Writes the confusion matrix as a PNG (counts in the cells)."""
    import matplotlib
    from sklearn import metrics as skm

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    matrix = np.asarray(matrix)
    size = 2.5 + 0.6 * len(class_names)
    fig, ax = plt.subplots(figsize=(size, size))
    skm.ConfusionMatrixDisplay(matrix, display_labels=list(class_names)).plot(
        ax=ax, colorbar=False, xticks_rotation=45
    )
    # Say what the cells count: sklearn's default "True label" leaves it to the reader.
    ax.set(xlabel="predicted class", ylabel="true class (cells: number of examples)")
    ax.set_title(title)
    fig.tight_layout()
    files.atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=100))
    plt.close(fig)
