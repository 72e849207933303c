"""Hyper-parameter search of one stage with Optuna (SPEC stage 5, addendum "Search per stage").

Each trial copies `config.trial` (the target stage's own config), sets the sampled values on
their config keys and runs the stage with `run_stage` in `<workdir>/trials/<number>`. Inputs
every trial shares (the student's teachers, the emotion table, the audio teacher's speech) are
made once in `<workdir>/<name>` and reused. After each epoch the trial's run reports its
validation weighted F1 to the study (`recipe.epoch_hook`) and stops when the median pruner says
so; the trial's value is the validation weighted F1 of the model the stage keeps.

The study lives in `<workdir>/study.db` (SQLite), so a killed search resumes: finished and
pruned trials count, a trial a kill left RUNNING is marked FAIL and its values are tried
again, and only the missing trials run. Writes `results.json` (best value and params, trials by
state), `best_params.json` (flat `{"optim.learning_rate": 4e-05, ...}`, taken by
`launch.py --overrides=FILE` on the target's config), `trials.csv` and Optuna's plots.
"""

import collections
import copy
import csv
import functools
import json
import os
import warnings

import optuna
from absl import logging

from mh3 import files, stages
from mh3.errors import UserError
from mh3.train import recipe

# target -> (config key naming a folder of inputs every trial shares, its folder in the workdir).
SHARED = {
    "student": ("teacher_workdir", "teachers"),
    "teacher_emotion": ("embeddings_workdir", "emotion_embeddings"),
    "teacher_audio": ("tts_workdir", "tts"),
}
HEADS_KEY, LAYERS_KEY = "model.num_attention_heads", "model.num_hidden_layers"
COUNTED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)


def run(config, workdir: str) -> dict:
    if config.search.objective != "whole":
        raise UserError(
            f"config search.objective={config.search.objective!r}: only 'whole' (weighted F1 "
            "over the whole validation set) is available; per-batch validation F1 is not reported"
        )
    workdir = os.path.abspath(workdir)
    space = constrained_space(config)
    study = _open_study(config, workdir, space)
    todo = config.trials - sum(t.state in COUNTED for t in study.get_trials(deepcopy=False))
    logging.info("search %s: %d trials to run in %s", config.target, max(todo, 0), workdir)
    if todo > 0:
        study.optimize(functools.partial(_objective, config, workdir, space), n_trials=todo)
    return _write_outputs(study, workdir)


def constrained_space(config) -> dict[str, dict]:
    """The search space by config key, with the model's limits applied.

    Rule: attention heads must divide the model's hidden size and layers cannot exceed the
    checkpoint's layer count (the tiny smoke models have hidden 32 and 2 layers), so choices
    and the range are cut to what the model takes, once per study (Optuna wants fixed
    distributions), and a default outside them moves to the nearest allowed value.
    """
    limits = model_limits(config)
    space = {}
    for name, p in config.space.items():
        entry = dict(choices=list(p.choices), low=p.low, high=p.high, step=p.step)
        if limits and p.key == HEADS_KEY and entry["choices"]:
            entry["choices"] = [h for h in p.choices if limits["hidden"] % h == 0]
            if not entry["choices"]:
                raise UserError(
                    f"config space.{name}.choices={tuple(p.choices)}: none divides the model's "
                    f"hidden size {limits['hidden']}"
                )
        if limits and p.key == LAYERS_KEY and not entry["choices"]:
            top = max(min(p.high, limits["layers"]), p.low)
            entry["high"] = p.low + (top - p.low) // p.step * p.step
            entry["low"] = min(p.low, entry["high"])
        allowed = entry["choices"] or range(entry["low"], entry["high"] + 1, entry["step"])
        entry["default"] = _nearest(p.default, allowed)
        if list(allowed) != list(p.choices or range(p.low, p.high + 1, p.step)):
            logging.info("space.%s cut to the model (%s): %s", name, limits, list(allowed))
        if space.get(p.key):
            raise UserError(f"config space.{name}: key {p.key} is searched twice")
        space[p.key] = entry
    return space


def _nearest(value, allowed):
    """`value` when allowed, else the closest allowed number (or the first choice)."""
    if value in allowed:
        return value
    if isinstance(value, str):
        return allowed[0]
    return min(allowed, key=lambda v: abs(v - value))


def model_limits(config) -> dict | None:
    """Hidden size and layer count of the target's model, or None when they are unknown (a hub
    name that cannot be read offline, or the emotion MLP, which has no heads)."""
    model = config.trial.model
    if config.target == "teacher_emotion":
        return None
    if config.target == "teacher_audio" and model.name == "tiny-random":
        return {"hidden": model.tiny.hidden_size, "layers": model.tiny.num_hidden_layers}
    from mh3.weights import resolve_checkpoint

    try:
        hf = files.read_json(os.path.join(resolve_checkpoint(model.name), "config.json"))
    except (UserError, OSError) as e:
        logging.warning("search space not checked against the model (%s)", e)
        return None
    # DistilBERT names them dim and n_layers.
    return {
        "hidden": hf.get("hidden_size", hf.get("dim")),
        "layers": hf.get("num_hidden_layers", hf.get("n_layers")),
    }


def _open_study(config, workdir: str, space: dict) -> optuna.Study:
    """Creates or reopens the study in `<workdir>/study.db`; fails trials a kill left RUNNING
    and queues their values again; enqueues the default trial in a new study."""
    os.makedirs(workdir, exist_ok=True)
    storage = optuna.storages.RDBStorage(f"sqlite:///{os.path.join(workdir, 'study.db')}")
    names = optuna.get_all_study_names(storage)
    others = [n for n in names if n != config.target]
    if others:
        raise UserError(
            f"{workdir} holds a search of {others[0]}, not {config.target}; use another --workdir"
        )
    # A seeded sampler restarts its random stream in each process: offset by the trials the
    # study already holds, so a resumed search does not draw the values it drew before the kill.
    held = len(storage.get_all_trials(storage.get_study_id_from_name(names[0]))) if names else 0
    seed = config.seed + held if config.search.seeded else None
    study = optuna.create_study(
        study_name=config.target,
        storage=storage,
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=optuna.pruners.MedianPruner(),
        load_if_exists=True,
    )
    trials = study.get_trials(deepcopy=False)
    if not trials:
        study.enqueue_trial({key: p["default"] for key, p in space.items()})
    for t in trials:
        if t.state == optuna.trial.TrialState.RUNNING:
            logging.warning("trial %d was left running by a kill: marked failed, rerun", t.number)
            storage.set_trial_state_values(t._trial_id, optuna.trial.TrialState.FAIL)
            # An enqueued trial killed before it sampled holds its values as fixed params.
            params = {**t.system_attrs.get("fixed_params", {}), **t.params}
            if params:
                study.enqueue_trial(params)
    return study


def trial_config(config, workdir: str, params: dict):
    """`config.trial` with `params` (config key -> value) set and the shared inputs' folders."""
    cfg = copy.deepcopy(config.trial)
    stages.apply_overrides(cfg, params, source=f"trial of {config.target}")
    if config.target in SHARED:
        key, folder = SHARED[config.target]
        cfg[key] = cfg[key] or os.path.join(workdir, folder)
    return cfg


def _suggest(trial: optuna.Trial, space: dict) -> dict:
    return {
        key: trial.suggest_categorical(key, p["choices"])
        if p["choices"]
        else trial.suggest_int(key, p["low"], p["high"], step=p["step"])
        for key, p in space.items()
    }


def _objective(config, workdir: str, space: dict, trial: optuna.Trial) -> float:
    cfg = trial_config(config, workdir, _suggest(trial, space))
    trial_dir = os.path.join(workdir, "trials", str(trial.number))
    # The student's epochs are reported by its run 0; teachers it trains are not the trial.
    watched = os.path.join(trial_dir, "run0") if config.target == "student" else trial_dir
    with recipe.epoch_hook(functools.partial(report_epoch, trial, watched)):
        results = stages.run_stage(cfg, trial_dir)
    return float(results["val"]["f1_weighted"])


def report_epoch(trial: optuna.Trial, watched: str, workdir: str, epoch: int, record) -> None:
    """`recipe.epoch_hook` callback: reports the trial's validation weighted F1 each epoch.

    Raises:
      optuna.TrialPruned: the pruner stops the trial (the run ends there).
    """
    if record is None or os.path.abspath(workdir) != watched:
        return
    trial.report(float(record["f1_weighted"]), epoch)
    if trial.should_prune():
        raise optuna.TrialPruned(f"pruned after epoch {epoch + 1}")


def _write_outputs(study: optuna.Study, workdir: str) -> dict:
    """results dict, best_params.json, trials.csv and the plots."""
    trials = study.get_trials(deepcopy=False)
    states = collections.Counter(t.state.name for t in trials)
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    out = {
        "target": study.study_name,
        "trials": dict(states),
        "study": os.path.join(workdir, "study.db"),
    }
    out["trials_csv"] = _write_table(trials, os.path.join(workdir, "trials.csv"))
    if not complete:
        logging.warning("no trial completed: no best params")
        return {**out, "best_value": None, "best_params": {}}
    best = study.best_trial
    path = os.path.join(workdir, "best_params.json")
    files.write_json(path, best.params)
    out.update(best_value=best.value, best_trial=best.number, best_params=best.params)
    out.update(best_params_file=path, plots=_plot(study, complete, workdir))
    return out


def _write_table(trials, path: str) -> str:
    keys = sorted({k for t in trials for k in t.params})

    def write(tmp):
        with open(tmp, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["number", "state", "value", *keys])
            for t in trials:
                value = "" if t.value is None else t.value
                w.writerow([t.number, t.state.name, value, *(t.params.get(k, "") for k in keys)])

    files.atomic_write(path, write)
    return path


def _plot(study: optuna.Study, complete: list, workdir: str) -> dict:
    """Optimisation history and, with two completed trials whose values differ in some
    parameter, the parameter importances (Optuna cannot rank parameters otherwise)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plots = {"optimization_history": optuna.visualization.matplotlib.plot_optimization_history}
    varied = any(
        len({json.dumps(t.params.get(k)) for t in complete}) > 1 for k in complete[0].params
    )
    if len(complete) >= 2 and varied:
        plots["param_importances"] = optuna.visualization.matplotlib.plot_param_importances
    else:
        logging.info("param importances skipped: needs 2 completed trials with varied params")
    written = {}
    for name, plot in plots.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            ax = plot(study)
        path = os.path.join(workdir, f"{name}.png")
        ax.figure.savefig(path, bbox_inches="tight", dpi=100)
        plt.close(ax.figure)
        written[name] = path
    return written
