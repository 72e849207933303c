"""The student stage: the whole 3M-Health pipeline for N seeds, and its report (SPEC 4 and 5).

1. each chosen teacher stage runs once, with seed config.seed, in `<teacher_workdir>/<kind>`
   unless it already finished there for the same config, and is shared by every student run,
   as the paper ran it (`retrain_teachers`: run r trains its own, seed + r, in
   `<kind>-run<r>`). A teacher pulls what it needs itself: the audio teacher its TTS stage,
   the emotion teacher its embedding table; those live in shared folders;
2. each teacher's logits for every example are computed once and cached in `soft_labels/`;
3. for run r (seed = config.seed + r) the student is fine-tuned on CE + KD against the
   averaged teacher probabilities in `run<r>/` (resumable from its checkpoints), evaluated on
   val and test, and saved in `run<r>/model/`.
Finished runs are recorded in `run<r>/run.json` and not repeated, so a killed pipeline
continues where it stopped. Selection uses validation only; test is only reported.
"""

import copy
import hashlib
import os

import numpy as np
from absl import logging

from mh3 import data, files, stages
from mh3.distill import losses, report, teachers
from mh3.errors import UserError
from mh3.stages import teacher_audio
from mh3.train import checkpoints, finetune, recipe, tracking

# Data keys that define which examples exist and how they are split: every teacher must agree
# with the student on them. (Tokenizer and batch sizes stay each teacher's own.)
SPLIT_KEYS = (
    "name", "format", "path", "files", "optional_files", "text_columns", "label_column",
    "id_column", "split_column", "classes", "label_values", "encoding", "empty_text", "split",
    "val_fraction", "test_fraction", "split_seed", "max_per_split",
)  # fmt: skip


def _share_split(sub, data_cfg) -> None:
    """Copies the student's split-defining data keys into every `data` block of `sub`."""
    for key, value in sub.items():
        if key == "data":
            for k in SPLIT_KEYS:
                value[k] = copy.deepcopy(data_cfg[k])
        elif hasattr(value, "items") and hasattr(value, "unlock"):
            _share_split(value, data_cfg)


def teacher_config(config, kind: str, seed: int, teacher_root: str):
    """The teacher stage's config for one run: its own settings, the student's split, a seed."""
    sub = copy.deepcopy(config[f"teacher_{kind}"])
    sub.unlock()
    _share_split(sub, config.data)
    sub.seed = seed
    # Seed-independent inputs are shared by all runs instead of rebuilt per run.
    if kind == "audio":
        sub.tts_workdir = sub.tts_workdir or os.path.join(teacher_root, "tts")
    if kind == "emotion":
        sub.embeddings_workdir = sub.embeddings_workdir or os.path.join(
            teacher_root, "emotion_embeddings"
        )
    sub.lock()
    return sub


def run(config, workdir: str) -> dict:
    kinds, weights = _check(config)
    prep = data.prepare(config.data)
    classes = list(prep.dataset.classes)
    rows = []
    # One progress line per step: each teacher stage, its soft-label pass, each student run.
    teacher_sets = config.runs if config.retrain_teachers else 1
    pipeline = tracking.Pipeline(2 * len(kinds) * teacher_sets + config.runs, "student")
    background = _speech_in_background(config, kinds, prep.dataset, workdir)
    try:
        for r in range(config.runs):
            seed = config.seed + r
            if r == 0 or config.retrain_teachers:
                teacher_rows, logits = _teachers(
                    config, kinds, r, prep.dataset, workdir, pipeline, background
                )
                rows += teacher_rows
            run_dir = os.path.join(workdir, f"run{r}")
            done = os.path.join(run_dir, "run.json")
            fp = _run_fingerprint(config, seed, logits)
            key = checkpoints.fingerprint_hash(fp)
            with pipeline.stage(f"student run {r} (seed {seed}, {run_dir})") as step:
                if os.path.exists(done) and files.read_json(done).get("config_hash") == key:
                    result = files.read_json(done)
                else:
                    step.running()
                    result = _train_student(config, run_dir, prep, seed, logits, weights, fp)
                    result["config_hash"] = key
                    files.write_json(done, result)
            rows += report.rows_for(r, seed, "student", result, classes)
    finally:
        if background is not None:
            background.stop()  # a no-op once waited for
    return _report(config, workdir, prep.dataset, kinds, rows)


def _speech_in_background(config, kinds, ds, workdir: str):
    """The audio teacher's speech started in the background (mh3.stages.tts.Background) when
    it is still to be made, so it takes the cores the text and emotion teachers leave idle."""
    if "audio" not in kinds or not config.speech_in_background:
        return None
    teacher_root = _teacher_root(config, workdir)
    sub = teacher_config(config, "audio", config.seed, teacher_root)
    where = os.path.join(teacher_root, _teacher_name(config, "audio", 0))
    if stages.is_done(sub, where):
        return None
    return teacher_audio.speech_in_background(sub, where, ds)


def _teacher_root(config, workdir: str) -> str:
    return config.teacher_workdir or os.path.join(workdir, "teachers")


def _teacher_name(config, kind: str, r: int) -> str:
    """A teacher's folder under the teacher root: `<kind>`, trained once and shared by every
    run, or `<kind>-run<r>` with retrain_teachers."""
    return f"{kind}-run{r}" if config.retrain_teachers else kind


def _check(config) -> tuple[list[str], tuple | None]:
    """The teacher kinds and weights, after checking `runs` and `kd.teacher_weights`."""
    kinds = [k for k in config.teachers.split("+") if k and k != "none"]
    weights = tuple(config.kd.teacher_weights) or None
    if weights is not None and len(weights) != len(kinds):
        raise UserError(
            f"config kd.teacher_weights has {len(weights)} values for {len(kinds)} teachers "
            f"({config.teachers}); give one per teacher or ()"
        )
    if config.runs < 1:
        raise UserError(f"config runs={config.runs}; at least 1")
    return kinds, weights


def _teachers(
    config, kinds, r: int, ds, workdir: str, pipeline: tracking.Pipeline, background=None
) -> tuple[list[dict], list[np.ndarray]]:
    """Trains (or finds) each teacher and returns its report rows and its cached soft labels;
    each teacher stage and each soft-label pass is one step of `pipeline`.

    As in the paper, teachers are trained once (seed = config.seed, in `<kind>/`) and shared by
    every student run; with `retrain_teachers` run r trains its own (seed + r, `<kind>-run<r>`).
    """
    teacher_root = _teacher_root(config, workdir)
    seed = config.seed + r if config.retrain_teachers else config.seed
    rows, logits = [], []
    for kind in kinds:
        name = _teacher_name(config, kind, r)
        logging.info("run %d: teacher %s", r, name)
        sub = teacher_config(config, kind, seed, teacher_root)
        where = os.path.join(teacher_root, name)
        if kind == "audio" and background is not None:
            background.wait()  # its lock on the tts workdir goes with it
        with pipeline.stage(f"teacher {name} ({where})") as step:
            if not stages.is_done(sub, where):
                step.running()
            res = stages.run_stage(sub, where)
        rows += report.rows_for(r, seed, kind, res, list(ds.classes))
        cache = os.path.join(workdir, "soft_labels")
        with pipeline.stage(f"soft labels of {name}") as step:

            def predict(res=res, step=step):
                step.running()  # called only when the cache has no entry
                return teachers.teacher_logits(res, ds, batch_size=config.predict_batch_size)

            logits.append(teachers.soft_labels(name, res["model"], ds, predict, cache))
    return rows, logits


def _report(config, workdir: str, ds, kinds, rows) -> dict:
    """results.csv, curves_student.png, confusion_test_runs.png and report.md over the runs;
    the stage's results."""
    classes = list(ds.classes)
    report.write_csv(os.path.join(workdir, "results.csv"), rows, classes)
    run_dirs = [os.path.join(workdir, f"run{r}") for r in range(config.runs)]
    report.plot_curves(
        os.path.join(workdir, "curves_student.png"),
        [os.path.join(d, "metrics.jsonl") for d in run_dirs],
        "student",
        loss_name=(loss_name := report.kd_loss_name(config.kd, config.teachers)),
    )
    runs = [files.read_json(os.path.join(d, "run.json")) for d in run_dirs]
    report.plot_confusion_runs(
        os.path.join(workdir, "confusion_test_runs.png"),
        [r["test"]["confusion_matrix"] for r in runs],
        classes,
        f"student, test ({ds.name})\ncounts summed over {config.runs} run(s)",
    )
    figures = [
        (f"student test confusion matrix, counts summed over {config.runs} run(s)",
         "confusion_test_runs.png"),
        ("student test confusion matrix, run 0", "run0/confusion_test.png"),
        ("student curves: training loss, validation loss and validation F1 per run",
         "curves_student.png"),
    ]  # fmt: skip
    hyper = [("student", report.hyperparameters(config, "student", runs[0].get("max_len")))]
    teacher_root = _teacher_root(config, workdir)
    for kind in kinds:
        folder = os.path.join(teacher_root, _teacher_name(config, kind, 0))
        done = os.path.join(folder, "results.json")
        max_len = files.read_json(done).get("max_len") if os.path.exists(done) else None
        block = config[f"teacher_{kind}"]
        hyper.append((f"{kind} teacher", report.hyperparameters(block, kind, max_len)))
        png = os.path.join(folder, "confusion_test.png")
        if os.path.exists(png):
            figures.append((f"{kind} teacher test confusion matrix", os.path.relpath(png, workdir)))
    reference = report.table4_row(ds.name, config.teachers, config.model.name)
    summary = ds.summary()
    test_counts = summary["per_class"]["test"]
    shared = f"trained once (seed {config.seed}) and shared by every student run"
    notes = ["data: the embedded demo dataset is SYNTHETIC (our own generated posts)"]
    notes = notes if ds.synthetic else []
    notes += [
        f"chance on test: {100 / len(classes):.2f}% accuracy guessing uniformly, "
        f"{100 * max(test_counts.values()) / max(sum(test_counts.values()), 1):.2f}% always "
        "guessing the largest class",
        f"dataset: {ds.name} ({summary['train']} train / {summary['val']} val / "
        f"{summary['test']} test), classes {classes}",
        f"teachers: {config.teachers}; student: {config.model.name}; protocol: {config.protocol}; "
        f"runs: {config.runs} (seeds {config.seed}..{config.seed + config.runs - 1})",
    ]
    if kinds:
        notes.append(
            f"teachers {'retrained in every run (seed + run)' if config.retrain_teachers else shared}"
        )
    notes += [
        f"± is the standard deviation over runs with ddof={config.std_ddof} "
        + ("(population, as the notebooks' np.std)" if config.std_ddof == 0 else "(sample)"),
        "model choice and any early stopping use validation only; test is reported, never chosen on",
        f"validation loss in the curves: the training objective {loss_name} without dropout; "
        "the tables' scores come from the kept model",
    ]
    if reference is not None and config.protocol != "paper":
        # Table 4 was measured with the paper's protocol (its split and recipe): not beside ours.
        label, values = reference
        notes.append(
            f"the paper's Table 4 has {label} for this dataset and teachers (protocol=paper): "
            + ", ".join(f"{k} {100 * v:.2f}" for k, v in values.items())
            + "; not shown in the table, these runs use protocol=clean"
        )
        reference = None
    if "audio" in kinds and config.teacher_audio.model.name == "tiny-random":
        notes.append(
            "audio teacher: a RANDOMLY INITIALISED tiny AST (the AudioSet AST cannot be "
            "downloaded offline), trained from scratch on this data's speech; expect it near chance"
        )
    report_path = os.path.join(workdir, "report.md")
    report.write_markdown(
        report_path, rows, [*kinds, "student"], classes, title=f"3M-Health student on {ds.name}",
        notes=notes, ddof=config.std_ddof, reference=reference, hyperparameters=hyper,
        figures=figures,
    )  # fmt: skip
    print(f"report: {report_path}")
    return {
        "data": summary,
        **report.summarize(rows, "student", classes, config.std_ddof),
        "std_ddof": config.std_ddof,
        "teachers": {k: report.summarize(rows, k, classes, config.std_ddof) for k in kinds},
        "report": report_path,
        "results_csv": os.path.join(workdir, "results.csv"),
    }


def _run_fingerprint(config, seed: int, logits: list) -> dict:
    """What one student run depends on: the config with this run's seed (not `runs`, so adding
    runs keeps the finished ones) and the teacher logits it learns from."""
    cfg = config.to_dict()
    del cfg["runs"]
    cfg["seed"] = seed
    digest = hashlib.sha256()
    for x in logits:
        digest.update(np.ascontiguousarray(x, np.float32).tobytes())
    return checkpoints.fingerprint(cfg, teacher_logits=digest.hexdigest()[:16])


def _train_student(config, run_dir, prep, seed, logits, weights, fp) -> dict:
    """Fine-tunes, evaluates and saves (`run<r>/model/`) the student of one run against the
    stacked teacher logits."""
    cfg = copy.deepcopy(config)
    cfg.unlock()
    cfg.seed = seed
    stacked = np.stack(logits, axis=1) if logits else None  # (N, K, C)

    def attach(batch):
        if stacked is not None:
            batch = dict(batch, teacher_logits=stacked[batch["index"]])
        return batch

    keys = recipe.keys(seed)
    loss = losses.make_student_loss(config.kd, weights)
    task = finetune.text_task(cfg, prep, keys, loss_fn=loss, extra_inputs=attach)
    _, results = recipe.train(cfg, run_dir, task, rng=keys["dropout"], fingerprint=fp)
    return {"data": prep.dataset.summary(), "max_len": prep.max_len, **results}
