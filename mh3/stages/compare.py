"""The compare stage: finished student workdirs side by side (comparison.md, comparison.png).

An input is a finished student when its config.json names the student stage and its
results.json was written for exactly that config (a student that was killed, or rerun with
another config and not finished, is not). Per-run scores come from the student rows of its
results.csv; a results.csv written before the roc_auc / precision / recall columns existed
gets them from each `run<r>/run.json`. Means and standard deviations are recomputed with this
stage's `std_ddof`, so every row of the table uses the same one.

Inputs on different datasets or test splits are refused rather than warned about: the table
puts test scores side by side, and scores on different test sets say nothing about which
teachers help. Different protocols or student checkpoints are allowed and named in the table.
"""

import csv
import os

import ml_collections
import numpy as np

from mh3 import files, stages
from mh3.distill import report
from mh3.errors import UserError

# (split, metric, column title) of the comparison table, in its order.
COLUMNS = (
    ("test", "accuracy", "test accuracy"),
    ("test", "f1_weighted", "test F1 weighted"),
    ("test", "f1_macro", "test F1 macro"),
    ("test", "roc_auc", "test ROC-AUC"),
    ("val", "f1_weighted", "val F1 weighted"),
)


def run(config, workdir: str) -> dict:
    if config.std_ddof not in (0, 1):
        raise UserError(
            f"config std_ddof={config.std_ddof!r}; use 1 (sample std) or 0 (population)"
        )
    paths = [p for p in config.workdirs.split("+") if p]
    if not paths:
        raise UserError(
            "config workdirs is empty; pass finished student workdirs, e.g. "
            "--config=configs/compare.py:workdirs=runs/a+runs/b"
        )
    labels = config.labels.split("+") if config.labels else []
    if labels and len(labels) != len(paths):
        raise UserError(
            f"config labels has {len(labels)} names for {len(paths)} workdirs; give one per "
            "workdir ('+'-joined, same order) or none"
        )
    inputs = [load_student(p) for p in paths]
    _check_same_test_split(inputs)
    if not labels:
        labels = [i["teachers"] for i in inputs]
        # Two inputs with the same teachers (e.g. two protocols) get their folder name too.
        labels = [
            f"{label} ({os.path.basename(os.path.normpath(i['workdir']))})"
            if labels.count(label) > 1
            else label
            for label, i in zip(labels, inputs, strict=True)
        ]
    classes = inputs[0]["data"]["classes"]
    for label, item in zip(labels, inputs, strict=True):
        item["label"] = label
        item.update(report.summarize(item.pop("rows"), "student", classes, config.std_ddof))
    md = os.path.join(workdir, "comparison.md")
    png = os.path.join(workdir, "comparison.png")
    write_markdown(md, inputs, config.std_ddof)
    plot(png, inputs, config.std_ddof)
    print(f"comparison: {md}")
    return {
        "data": inputs[0]["data"],
        "std_ddof": config.std_ddof,
        "inputs": inputs,
        "comparison_md": md,
        "comparison_png": png,
    }


def _not_finished(path: str, why: str) -> UserError:
    return UserError(
        f"compare: {path} is not a finished student workdir ({why}); pass the --workdir of a "
        "student run that printed 'report: ...', or rerun its student command to finish it"
    )


def _read_json(path: str, folder: str) -> dict:
    if not os.path.exists(path):
        raise _not_finished(folder, f"no {os.path.basename(path)}")
    try:
        return files.read_json(path)
    except (OSError, ValueError) as e:
        raise _not_finished(folder, f"{os.path.basename(path)} unreadable: {e}") from None


def load_student(path: str) -> dict:
    """The config facts and per-run student rows of one finished student workdir.

    Raises:
      UserError: one line naming the folder and the fix, when it is not a finished student.
    """
    if not os.path.isdir(path):
        raise _not_finished(path, "no such folder")
    cfg = _read_json(os.path.join(path, "config.json"), path)
    if cfg.get("stage") != "student":
        raise _not_finished(path, f"it holds the {cfg.get('stage')!r} stage")
    results = _read_json(os.path.join(path, "results.json"), path)
    if results.get("config_hash") != stages.config_hash(ml_collections.ConfigDict(cfg)):
        raise _not_finished(
            path, "its results.json is from another config than its config.json: a later run "
            "there did not finish"
        )  # fmt: skip
    csv_path = os.path.join(path, "results.csv")
    if not os.path.exists(csv_path):
        raise _not_finished(path, "no results.csv")
    with open(csv_path, newline="") as f:
        reader = csv.DictReader(f)
        rows = [r for r in reader if r["model"] == "student"]
        header = reader.fieldnames or []
    classes = results["data"]["classes"]
    missing = [k for k in report.metric_keys(classes) if k not in header]
    if not rows or len({r["run"] for r in rows}) != cfg["runs"]:
        raise _not_finished(path, f"results.csv lacks student rows for its {cfg['runs']} runs")
    if missing:
        # Written before these columns existed: each run's own record has every metric.
        runs = {}
        for r in rows:
            if r["run"] not in runs:
                runs[r["run"]] = _read_json(os.path.join(path, f"run{r['run']}", "run.json"), path)
            r.update({k: runs[r["run"]][r["split"]].get(k) for k in missing})
    return {
        "workdir": path,
        "teachers": cfg["teachers"],
        "model": cfg["model"]["name"],
        "protocol": cfg["protocol"],
        "dataset": cfg["data"]["name"],
        "runs": cfg["runs"],
        "config_hash": results["config_hash"],
        "data": results["data"],
        "rows": rows,
    }


def _check_same_test_split(inputs: list[dict]) -> None:
    """Refuses inputs whose datasets, classes or test splits differ (see module docstring)."""

    def split(i):
        return i["dataset"], i["data"]["classes"], i["data"]["per_class"]["test"]

    first = inputs[0]
    for other in inputs[1:]:
        if split(other) != split(first):
            raise UserError(
                f"compare: {first['workdir']} ({first['dataset']}, {first['data']['test']} test "
                f"posts) and {other['workdir']} ({other['dataset']}, {other['data']['test']} "
                "test posts) were tested on different data; scores on different test sets are "
                "not comparable: compare workdirs of one dataset and split"
            )


def _cell(item: dict, split: str, key: str) -> str:
    spread = item[split]["runs"] > 1
    return report.cell(item[split][key], item[f"{split}_std"][key], spread)


def write_markdown(path: str, inputs: list[dict], ddof: int) -> None:
    data, first = inputs[0]["data"], inputs[0]
    lines = [
        f"# Students compared on {first['dataset']}",
        "",
        f"- test split: {data['test']} posts, classes {data['classes']}; "
        f"{data['train']} train / {data['val']} val",
        f"- mean ± std over each workdir's runs, std with ddof={ddof} "
        + ("(sample)" if ddof == 1 else "(population, as the notebooks' np.std)")
        + ", recomputed from each workdir's results.csv; values in %",
        "- model choice used validation only; test is reported, never chosen on",
    ]
    for item in inputs:
        n = item["test"].get("undefined_runs", {}).get("roc_auc")
        if n:
            lines.append(f"- {item['label']}: ROC-AUC undefined in {n} of {item['runs']} runs "
                         "(a class missing from the test split); mean over the rest")  # fmt: skip
        ref = report.table4_row(item["dataset"], item["teachers"], item["model"])
        if ref is not None:
            label, values = ref
            lines.append(
                f"- {item['label']}: the paper's Table 4 has {label} (protocol=paper; this "
                f"workdir: protocol={item['protocol']}): "
                + ", ".join(f"{k} {100 * v:.2f}" for k, v in values.items())
            )
    titles = " | ".join(t for _, _, t in COLUMNS)
    lines += ["", f"| label | teachers | student | protocol | runs | {titles} | workdir |"]
    lines.append("|---|---|---|---|---|" + "---|" * len(COLUMNS) + "---|")
    for item in inputs:
        cells = " | ".join(_cell(item, split, key) for split, key, _ in COLUMNS)
        lines.append(
            f"| {item['label']} | {item['teachers']} | {item['model']} | {item['protocol']} | "
            f"{item['runs']} | {cells} | {item['workdir']} |"
        )
    lines += ["", "![test F1 weighted per workdir, mean ± std over runs](comparison.png)", ""]
    files.atomic_write(path, lambda tmp: open(tmp, "w").write("\n".join(lines)))


def plot(path: str, inputs: list[dict], ddof: int) -> None:
    """Bars of test F1 weighted (mean over runs) with the std over runs as error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    means = np.array([100 * i["test"]["f1_weighted"] for i in inputs])
    stds = np.array([100 * i["test_std"]["f1_weighted"] if i["runs"] > 1 else 0.0 for i in inputs])
    fig, ax = plt.subplots(figsize=(2 + 1.6 * len(inputs), 4.5))
    x = np.arange(len(inputs))
    ax.bar(x, means, yerr=stds, capsize=6, color="tab:blue", alpha=0.8)
    for xi, m, s, item in zip(x, means, stds, inputs, strict=True):
        text = f"{m:.2f}" + (f" ± {s:.2f}" if item["runs"] > 1 else "") + f"\n{item['runs']} run(s)"
        ax.text(xi, min(m + s + 2, 96), text, ha="center", va="bottom", fontsize="small")
    ax.set_xticks(x, [i["label"] for i in inputs], rotation=15)
    ax.set_ylim(0, 100)
    ax.set(
        xlabel="student (teachers distilled from)",
        ylabel=f"test F1 weighted (%), mean ± std over runs (ddof={ddof})",
        title=f"{inputs[0]['dataset']}: test F1 weighted",
    )
    fig.tight_layout()
    files.atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=100))
    plt.close(fig)
