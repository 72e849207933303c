"""The student stage's outputs over several runs: results.csv, report.md and plots.

`results.csv` (DESIGN contract) has one row per (run, model, split) with `run`, `seed`, `model`
(`student` or a teacher's name), `split`, `accuracy`, `f1_macro`, `f1_weighted`, `f1_micro`,
then `f1_<class>` per class. `report.md` gives mean ± std over the runs of each model.
"""

import csv
import io
import json
import os

import numpy as np

from mh3 import files

METRICS = ("accuracy", "f1_macro", "f1_weighted", "f1_micro")


def rows_for(run: int, seed: int, model: str, results: dict, classes) -> list[dict]:
    """The results.csv rows of one trained model (its `val` and `test` metric dicts)."""
    rows = []
    for split in ("val", "test"):
        if split not in results:
            continue
        m = results[split]
        row = {"run": run, "seed": seed, "model": model, "split": split}
        row.update({k: m[k] for k in METRICS})
        row.update({f"f1_{c}": m[f"f1_{c}"] for c in classes})
        rows.append(row)
    return rows


def columns(classes) -> list[str]:
    return ["run", "seed", "model", "split", *METRICS, *(f"f1_{c}" for c in classes)]


def write_csv(path: str, rows: list[dict], classes) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns(classes))
    writer.writeheader()
    writer.writerows(rows)
    files.atomic_write(path, lambda tmp: open(tmp, "w").write(buf.getvalue()))


def summarize(rows: list[dict], model: str, classes, ddof: int = 1) -> dict:
    """{split: mean metrics, f'{split}_std': standard deviations} of one model over runs.

    Args:
      ddof: 1 = the sample standard deviation (clean protocol); 0 = the population one the
        notebooks' `np.std` reported (paper protocol).
    """
    out = {}
    for split in ("val", "test"):
        chosen = [r for r in rows if r["model"] == model and r["split"] == split]
        if not chosen:
            continue
        keys = [*METRICS, *(f"f1_{c}" for c in classes)]
        values = {k: np.array([r[k] for r in chosen], np.float64) for k in keys}
        out[split] = {k: float(v.mean()) for k, v in values.items()}
        # No spread exists over a single run: 0 rather than NaN (ddof=1) or a fake 0 claim.
        out[f"{split}_std"] = {
            k: float(v.std(ddof=ddof)) if len(v) > 1 else 0.0 for k, v in values.items()
        }
        out[split]["runs"] = len(chosen)
    return out


def write_markdown(
    path: str,
    rows: list[dict],
    models: list[str],
    classes,
    *,
    title: str,
    notes: list[str],
    ddof: int = 1,
) -> None:
    """report.md: one mean ± std table per split, models as rows, metrics as columns.

    A model with a single run gets its plain values (no ± column entry).
    """
    keys = [*METRICS[:3], *(f"f1_{c}" for c in classes)]
    lines = [f"# {title}", ""]
    lines += [f"- {n}" for n in notes]
    for split in ("test", "val"):
        lines += ["", f"## {split} (mean ± std over runs, ddof={ddof}, %)", ""]
        lines.append("| model | runs | " + " | ".join(keys) + " |")
        lines.append("|---|---|" + "---|" * len(keys))
        for model in models:
            s = summarize(rows, model, classes, ddof)
            if split not in s:
                continue
            # A spread over one run does not exist; "± 0.00" would claim it does.
            spread = s[split]["runs"] > 1
            cells = [
                f"{100 * s[split][k]:.2f}"
                + (f" ± {100 * s[f'{split}_std'][k]:.2f}" if spread else "")
                for k in keys
            ]
            lines.append(f"| {model} | {s[split]['runs']} | " + " | ".join(cells) + " |")
    lines.append("")
    files.atomic_write(path, lambda tmp: open(tmp, "w").write("\n".join(lines)))


def plot_curves(path: str, metrics_files: list[str], title: str) -> None:
    """Training loss per logged step and validation loss per epoch, one line per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_train, ax_val) = plt.subplots(1, 2, figsize=(10, 4))
    for run, metrics_path in enumerate(metrics_files):
        if not os.path.exists(metrics_path):
            continue
        with open(metrics_path) as f:
            records = [json.loads(line) for line in f if line.strip()]
        train = [(r["step"], r["loss"]) for r in records if r.get("split") == "train"]
        val = [(r["epoch"] + 1, r["loss"]) for r in records if r.get("split") == "val"]
        if train:
            ax_train.plot(*zip(*train, strict=True), label=f"run {run}")
        if val:
            ax_val.plot(*zip(*val, strict=True), marker="o", label=f"run {run}")
    ax_train.set(xlabel="step", ylabel="training loss (CE + KD)", title=f"{title}: train")
    ax_val.set(xlabel="epoch", ylabel="validation cross-entropy", title=f"{title}: validation")
    for ax in (ax_train, ax_val):
        if ax.lines:
            ax.legend()
    fig.tight_layout()
    files.atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=100))
    plt.close(fig)
