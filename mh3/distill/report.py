"""The student stage's outputs over several runs: results.csv, report.md and plots.

`results.csv` (DESIGN contract) has one row per (run, model, split) with `run`, `seed`, `model`
(`student` or a teacher's name), `split`, `accuracy`, `f1_macro`, `f1_weighted`, `f1_micro`,
then `f1_<class>` per class; after those come `roc_auc` (empty where undefined) and
`precision_<class>`, `recall_<class>` (appended later: results.csv files written before lack
them). `report.md` gives mean ± std over the runs of each model, per-class scores, the
hyper-parameters of every model, the paper's Table 4 row where one matches, and the figures.
"""

import csv
import io
import json
import os

import numpy as np

from mh3 import files

METRICS = ("accuracy", "f1_macro", "f1_weighted", "f1_micro")
# The columns of the main tables (f1_micro equals accuracy for single-label classification).
HEADLINE = ("accuracy", "f1_macro", "f1_weighted", "roc_auc")

TABLE_4_SOURCE = (
    "Cabral, Luo, Poon, Han: 3M-Health, CIKM 2024 (arXiv 2407.09020), Table 4 "
    "(test, %, as copied into SPEC.md); the paper's protocol, mean over its 10 runs"
)
# dataset -> (teacher combination, or the checkpoint of a fine-tuned baseline without teachers)
# -> (label, (accuracy, F1 macro, F1 weighted) in %). Only SDCNL has the extra baselines.
TABLE_4 = {
    "sdcnl": {
        "bert-base-uncased": ("BERT", (67.02, 66.57, 66.64)),
        "roberta-base": ("RoBERTa", (70.97, 70.63, 70.69)),
        "mental/mental-bert-base-uncased": ("MentalBERT", (69.39, 69.21, 69.26)),
        "mental/mental-roberta-base": ("MentalRoBERTa", (72.30, 72.10, 72.14)),
        "text+audio": ("3M-Health Text+Audio", (76.52, 76.50, 76.51)),
        "text+emotion+audio": ("3M-Health All", (75.20, 74.84, 74.90)),
    },
    "deptweet": {
        "bert-base-uncased": ("BERT", (81.89, 40.40, 80.21)),
        "text+emotion": ("3M-Health Text+Emo", (84.03, 46.43, 83.09)),
        "text+emotion+audio": ("3M-Health All", (82.77, 46.20, 82.61)),
    },
    "idendep": {
        "bert-base-uncased": ("BERT", (88.65, 85.23, 88.10)),
        "text+audio": ("3M-Health Text+Audio", (94.30, 93.10, 94.26)),
        "text+emotion+audio": ("3M-Health All", (93.92, 92.58, 93.85)),
    },
    "twitsuicide": {
        "bert-base-uncased": ("BERT", (57.58, 53.60, 57.25)),
        "text+emotion": ("3M-Health Text+Emo", (65.76, 61.96, 65.46)),
        "text+emotion+audio": ("3M-Health All", (61.21, 59.64, 61.23)),
    },
}


def table4_row(dataset: str, teachers: str, model: str) -> tuple[str, dict] | None:
    """The paper's Table 4 row for a dataset and teacher combination ('none': the baseline
    fine-tune of `model`), as (label, {metric: fraction}); None when the paper has none."""
    rows = TABLE_4.get(dataset, {})
    key = model if teachers in ("", "none") else teachers
    if key not in rows:
        return None
    label, values = rows[key]
    return label, {k: v / 100 for k, v in zip(HEADLINE[:3], values, strict=True)}


def metric_keys(classes) -> list[str]:
    """Every per-run metric the report keeps, in results.csv column order."""
    return [
        *METRICS,
        *(f"f1_{c}" for c in classes),
        "roc_auc",
        *(f"precision_{c}" for c in classes),
        *(f"recall_{c}" for c in classes),
    ]


def rows_for(run: int, seed: int, model: str, results: dict, classes) -> list[dict]:
    """The results.csv rows of one trained model (its `val` and `test` metric dicts)."""
    rows = []
    for split in ("val", "test"):
        if split not in results:
            continue
        m = results[split]
        row = {"run": run, "seed": seed, "model": model, "split": split}
        # .get: ROC-AUC is null when a split lacks a class.
        row.update({k: m.get(k) for k in metric_keys(classes)})
        rows.append(row)
    return rows


def columns(classes) -> list[str]:
    return ["run", "seed", "model", "split", *metric_keys(classes)]


def write_csv(path: str, rows: list[dict], classes) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns(classes))
    writer.writeheader()
    writer.writerows(rows)
    files.atomic_write(path, lambda tmp: open(tmp, "w").write(buf.getvalue()))


def _number(value) -> float | None:
    """A metric from a row: a float, or None for null / an empty results.csv cell."""
    if value is None or value == "":
        return None
    return float(value)


def summarize(rows: list[dict], model: str, classes, ddof: int = 1) -> dict:
    """{split: mean metrics, f'{split}_std': standard deviations} of one model over runs.

    A metric undefined in some runs (ROC-AUC) is averaged over the runs that have it, and
    `undefined_runs` counts the others; undefined in all runs, its mean and std are None.

    Args:
      ddof: 1 = the sample standard deviation (clean protocol); 0 = the population one the
        notebooks' `np.std` reported (paper protocol).
    """
    out = {}
    for split in ("val", "test"):
        chosen = [r for r in rows if r["model"] == model and r["split"] == split]
        if not chosen:
            continue
        mean, std, undefined = {}, {}, {}
        for k in metric_keys(classes):
            found = [_number(r.get(k)) for r in chosen]
            v = np.array([x for x in found if x is not None], np.float64)
            if len(v) < len(found):
                undefined[k] = len(found) - len(v)
            mean[k] = float(v.mean()) if len(v) else None
            # No spread exists over a single run: 0 rather than NaN (ddof=1) or a fake 0 claim.
            std[k] = float(v.std(ddof=ddof)) if len(v) > 1 else (0.0 if len(v) else None)
        out[split] = {**mean, "runs": len(chosen)}
        if undefined:
            out[split]["undefined_runs"] = undefined
        out[f"{split}_std"] = std
    return out


def cell(mean: float | None, std: float | None, spread: bool) -> str:
    """'80.00 ± 10.00' (%), the plain mean when there is no spread, 'n/a' when undefined."""
    if mean is None:
        return "n/a"
    return f"{100 * mean:.2f}" + (f" ± {100 * std:.2f}" if spread and std is not None else "")


def write_markdown(
    path: str,
    rows: list[dict],
    models: list[str],
    classes,
    *,
    title: str,
    notes: list[str],
    ddof: int = 1,
    reference: tuple[str, dict] | None = None,
    hyperparameters: list[tuple[str, dict]] | None = None,
    figures: list[tuple[str, str]] | None = None,
) -> None:
    """report.md: per split a mean ± std table (models as rows), then per-class precision,
    recall and F1; the hyper-parameters of every model; the figures, embedded.

    A model with a single run gets its plain values (no ± column entry).

    Args:
      reference: (label, {metric: fraction}) of a published row, shown under the test table.
      hyperparameters: (model, {name: value}) per model; the names become the table's rows.
      figures: (caption, path relative to report.md) per image.
    """
    lines = [f"# {title}", ""]
    lines += [f"- {n}" for n in notes]
    for split in ("test", "val"):
        summaries = {m: summarize(rows, m, classes, ddof) for m in models}
        summaries = {m: s for m, s in summaries.items() if split in s}
        lines += ["", f"## {split} (mean ± std over runs, ddof={ddof}, %)", ""]
        lines.append("| model | runs | " + " | ".join(HEADLINE) + " |")
        lines.append("|---|---|" + "---|" * len(HEADLINE))
        for model, s in summaries.items():
            # A spread over one run does not exist; "± 0.00" would claim it does.
            spread = s[split]["runs"] > 1
            cells = [cell(s[split][k], s[f"{split}_std"][k], spread) for k in HEADLINE]
            lines.append(f"| {model} | {s[split]['runs']} | " + " | ".join(cells) + " |")
        if split == "test" and reference is not None:
            label, values = reference
            cells = [cell(values.get(k), None, False) for k in HEADLINE]
            lines.append(f"| paper: {label} | 10 | " + " | ".join(cells) + " |")
            lines += ["", f"paper row: {TABLE_4_SOURCE}."]
        undefined = {
            m: s[split].get("undefined_runs", {}).get("roc_auc") for m, s in summaries.items()
        }
        undefined = {m: n for m, n in undefined.items() if n}
        if undefined:
            lines += ["", "ROC-AUC undefined (a class missing from the split) in: " + ", ".join(
                f"{m} ({n} of {summaries[m][split]['runs']} runs; mean over the rest)"
                for m, n in undefined.items()
            )]  # fmt: skip
        lines += ["", f"### {split}: per class (mean ± std over runs, %)", ""]
        lines.append("| model | class | precision | recall | F1 |")
        lines.append("|---|---|---|---|---|")
        for model, s in summaries.items():
            spread = s[split]["runs"] > 1
            for c in classes:
                cells = [
                    cell(s[split][f"{kind}_{c}"], s[f"{split}_std"][f"{kind}_{c}"], spread)
                    for kind in ("precision", "recall", "f1")
                ]
                lines.append(f"| {model} | {c} | " + " | ".join(cells) + " |")
    if hyperparameters:
        names = list(dict.fromkeys(n for _, hp in hyperparameters for n in hp))
        lines += ["", "## Hyper-parameters", ""]
        lines.append("| | " + " | ".join(m for m, _ in hyperparameters) + " |")
        lines.append("|---|" + "---|" * len(hyperparameters))
        for name in names:
            values = [str(hp.get(name, "—")).replace("|", "/") for _, hp in hyperparameters]
            lines.append(f"| {name} | " + " | ".join(values) + " |")
    if figures:
        lines += ["", "## Figures", ""]
        for caption, rel in figures:
            lines += [f"![{caption}]({rel})", "", f"*{caption}* (`{rel}`)", ""]
    lines.append("")
    files.atomic_write(path, lambda tmp: open(tmp, "w").write("\n".join(lines)))


def _kept(value, keep) -> str:
    """A model override; `keep` (0, '' or -1) means the checkpoint's own value is used."""
    return "checkpoint's" if value == keep else str(value)


def _optimizer(optim) -> str:
    parts = [optim.name, f"{optim.schedule} schedule"]
    if optim.get("warmup_steps") or optim.get("warmup_ratio"):
        parts.append(
            f"warm-up {optim.warmup_steps} steps"
            if optim.warmup_steps
            else f"warm-up {100 * optim.warmup_ratio:g}% of steps"
        )
    parts.append(f"clip norm {optim.clip_norm:g}" if optim.clip_norm else "no clipping")
    if optim.get("plateau_patience"):
        parts.append(
            f"lr × {optim.plateau_factor:g} on val-loss plateau (patience {optim.plateau_patience})"
        )
    if optim.get("accumulate_steps", 1) > 1:
        parts.append(f"{optim.accumulate_steps} accumulated steps per update")
    return ", ".join(parts)


def hyperparameters(block, kind: str, max_len: int | None = None) -> dict:
    """{name: value} of one model's settings, read from its config block.

    Args:
      block: the student's config (`kind='student'`) or a teacher's (`config.teacher_<kind>`).
      kind: student, text, emotion or audio.
      max_len: the sequence length actually used (a run's results), shown beside the cap.
    """
    m, hp = block.model, {}
    if kind == "emotion":
        hp["model"] = "MLP over the frozen MM-EMOG table"
        hp["layers"] = m.num_layers
        hp["hidden size"] = m.hidden_size
        hp["hidden activation"] = "relu" + (" (also on the output logits)" if m.output_relu else "")
        hp["dropout"] = m.dropout
    else:
        tiny = kind == "audio" and m.name == "tiny-random"
        hp["model"] = m.name + (" (randomly initialised AST)" if tiny else "")
        hp["layers"] = m.tiny.num_hidden_layers if tiny and not m.num_hidden_layers else _kept(
            m.num_hidden_layers, 0
        )  # fmt: skip
        hp["attention heads"] = (
            m.tiny.num_attention_heads
            if tiny and not m.num_attention_heads
            else _kept(m.num_attention_heads, 0)
        )
        if tiny:
            hp["hidden size"] = m.tiny.hidden_size
        if "hidden_act" in m:
            families = ", ".join(m.hidden_act_families)
            hp["hidden activation"] = _kept(m.hidden_act, "") + (
                f" (on {families})" if m.hidden_act else ""
            )
        hp["dropout"] = _kept(m.hidden_dropout_prob, -1.0)
    hp["optimizer"] = _optimizer(block.optim)
    hp["learning rate"] = f"{block.optim.learning_rate:g}"
    hp["weight decay"] = f"{block.optim.weight_decay:g}"
    hp["batch size"] = block.data.batch_size
    t = block.train
    hp["epochs"] = f"{t.num_steps} steps" if t.num_steps else t.epochs
    if t.early_stop_patience:
        hp["epochs"] = f"up to {hp['epochs']} (early stop patience {t.early_stop_patience})"
    hp["model kept"] = "last epoch" if t.model_choice == "last" else f"best val {t.select_metric}"
    if kind == "audio":
        hp["max length"] = f"{block.audio.max_length} frames"
    else:
        used = f"{max_len} (cap {block.data.max_len})" if max_len else f"cap {block.data.max_len}"
        hp["max length"] = f"{used} tokens"
    if "compute_dtype" in m:
        hp["compute dtype"] = m.compute_dtype
    # Every teacher learns from the labels alone.
    hp["training loss"] = kd_loss_name(block.kd, block.teachers) if kind == "student" else "CE"
    if kind == "student":
        hp["teachers"] = block.teachers
        if block.teachers != "none":
            hp["KD reduction"] = block.kd.reduction
            hp["teacher weights"] = ", ".join(f"{w:g}" for w in block.kd.teacher_weights) or "equal"
    return hp


def kd_loss_name(kd, teachers: str) -> str:
    """The student's loss in words, e.g. 'CE + KD (T=1)' or 'CE' without teachers."""
    ce = "CE" if kd.ce_weight == 1 else f"{kd.ce_weight:g}·CE"
    if teachers in ("", "none"):
        return ce
    kl = "KD" if kd.kd_weight == 1 else f"{kd.kd_weight:g}·KD"
    return f"{ce} + {kl} (T={kd.temperature:g})"


def plot_confusion_runs(path: str, matrices: list, classes, title: str) -> None:
    """One confusion matrix with the counts of several runs' matrices summed."""
    from mh3.train import metrics

    metrics.plot_confusion(np.sum(np.asarray(matrices), axis=0), classes, path, title)


def plot_curves(path: str, metrics_files: list[str], title: str, loss_name: str = "loss") -> None:
    """Training loss per logged step, validation loss and validation weighted F1 per epoch,
    one line per run. Where the records split the loss into its CE and KD parts (`loss_ce`,
    `loss_kd`), those are drawn too (dashed: CE, dotted: KD).

    Args:
      loss_name: what the logged `loss` is, in words (the student's: 'CE + KD (T=1)'); the
        validation loss of metrics.jsonl is the training objective without dropout.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, (ax_train, ax_val, ax_f1) = plt.subplots(1, 3, figsize=(15, 4))
    for run, metrics_path in enumerate(metrics_files):
        if not os.path.exists(metrics_path):
            continue
        with open(metrics_path) as f:
            records = [json.loads(line) for line in f if line.strip()]
        for split, ax, x in (("train", ax_train, "step"), ("val", ax_val, "epoch")):
            chosen = [r for r in records if r.get("split") == split]
            xs = [r[x] + (1 if x == "epoch" else 0) for r in chosen]
            if not chosen:
                continue
            marker = "o" if split == "val" else None
            (line,) = ax.plot(xs, [r["loss"] for r in chosen], marker=marker, label=f"run {run}")
            for part, style in (("ce", "--"), ("kd", ":")):
                # The training loop logs the loss's named parts as `loss_<part>`.
                key = next((k for k in (f"loss_{part}", part) if all(k in r for r in chosen)), None)
                if key is not None:
                    ax.plot(xs, [r[key] for r in chosen], style, color=line.get_color(),
                            label=f"run {run}: {part.upper()} part")  # fmt: skip
        val = [r for r in records if r.get("split") == "val" and "f1_weighted" in r]
        if val:
            ax_f1.plot([r["epoch"] + 1 for r in val], [100 * r["f1_weighted"] for r in val],
                       marker="o", label=f"run {run}")  # fmt: skip
    ax_train.set(xlabel="training step", ylabel=f"training loss: {loss_name}",
                 title=f"{title}: training loss (dropout on)")  # fmt: skip
    ax_val.set(xlabel="epoch", ylabel=f"validation loss: {loss_name}",
               title=f"{title}: validation loss (end of epoch)")  # fmt: skip
    ax_f1.set(xlabel="epoch", ylabel="validation F1 weighted (%)",
              title=f"{title}: validation F1 weighted")  # fmt: skip
    for ax in (ax_train, ax_val, ax_f1):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))  # counts
        if ax.lines:
            ax.legend(fontsize="small")
    fig.tight_layout()
    files.atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=100))
    plt.close(fig)
