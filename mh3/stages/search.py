"""Hyper-parameter search of one stage with Optuna (SPEC stage 5, addendum "Search per stage").

Each trial copies `config.trial` (the target stage's own config), sets the sampled values on
their config keys and runs the stage with `run_stage` in `<workdir>/trials/<number>`. Inputs
every trial shares (the student's teachers, the emotion table, the audio teacher's speech) are
made once in `<workdir>/<name>` and reused (the student's cached teacher soft labels too).

Objective (`search.objective`), also what each epoch reports to the median pruner
(`recipe.epoch_hook`), which stops a trial when it says so:
- `whole` (clean default): the validation weighted F1 over the whole validation set of the model
  the stage keeps;
- `per_batch_mean` (paper default): the notebooks' measure, the mean of per-batch weighted F1
  of the LAST epoch's validation (`f1_weighted_batch_mean` of the run's last val record).

Beyond the paper (clean only, student target, `search.teacher_weights` and the space entry on
`kd.temperature`): each teacher's weight in the averaged soft label. Every teacher gets a
uniform u_k in [0, 1]; w_k = -log(1 - u_k) is then an Exponential(1) draw and w / sum(w) is a
uniform (Dirichlet(1, ..., 1)) draw on the simplex, so no mix of teachers is favoured, any
teacher can get ~0, and the K numbers TPE models are independent boxes, which it handles well
(normalised raw [0, 1] weights would crowd the centre of the simplex). Equal u's (the enqueued
default) give equal weights, written `()`, the student config's own "equal" value, so the
default trial is exactly the untuned student.

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
import math
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
WEIGHTS_KEY, TEMPERATURE_KEY = "kd.teacher_weights", "kd.temperature"
# Optuna's name of teacher k's uniform draw (see the module docstring); a config key never
# starts with it.
U_PREFIX = "teacher_weight_u:"
# The default trial's u: -log(1 - u) = 1 for every teacher, i.e. equal weights.
U_EQUAL = 1.0 - math.exp(-1.0)
COUNTED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
# search.objective -> the validation record's key it reads.
MEASURES = {"whole": "f1_weighted", "per_batch_mean": "f1_weighted_batch_mean"}


def run(config, workdir: str) -> dict:
    _check(config)
    workdir = os.path.abspath(workdir)
    space = constrained_space(config)
    study = _open_study(config, workdir, space)
    todo = config.trials - sum(t.state in COUNTED for t in study.get_trials(deepcopy=False))
    logging.info("search %s: %d trials to run in %s", config.target, max(todo, 0), workdir)
    if todo > 0:
        study.optimize(functools.partial(_objective, config, workdir, space), n_trials=todo)
    return _write_outputs(study, workdir)


def _check(config) -> None:
    """The objective is known; the paper protocol searches only the paper's space."""
    if config.search.objective not in MEASURES:
        raise UserError(
            f"config search.objective={config.search.objective!r}; choose one of "
            f"{', '.join(MEASURES)}"
        )
    kd_keys = [p.key for p in config.space.values() if p.key.startswith("kd.")]
    if config.protocol == "paper" and (config.search.teacher_weights or kd_keys):
        raise UserError(
            "config protocol=paper searches the paper's space only: teacher weights and "
            f"{kd_keys or 'kd keys'} are a clean-protocol extension (use protocol=clean)"
        )
    if config.search.teacher_weights and config.target != "student":
        raise UserError("config search.teacher_weights=True needs target=student")


def teacher_kinds(config) -> list[str]:
    """The student trial's teachers in `teachers` order ([] for other targets)."""
    if config.target != "student":
        return []
    return [k for k in config.trial.teachers.split("+") if k and k != "none"]


def weighted_teachers(config) -> list[str]:
    """The teachers whose weights the search samples: none unless asked, and none with fewer
    than two teachers (one teacher's normalised weight is always 1)."""
    kinds = teacher_kinds(config)
    return kinds if config.search.teacher_weights and len(kinds) >= 2 else []


def teacher_weights(u: list[float]) -> tuple[float, ...]:
    """Normalised teacher weights from their uniform draws (module docstring); `()` (equal,
    the student config's default) when the draws are equal. Rounded to 4 decimals for a
    readable best_params.json: the loss renormalises them, so the rounding changes nothing."""
    if len(set(u)) <= 1:
        return ()
    raw = [-math.log1p(-min(x, 1.0 - 1e-12)) for x in u]
    total = sum(raw)
    if total <= 0:  # every u exactly 0: no teacher preferred
        return ()
    return tuple(round(w / total, 4) for w in raw)


def constrained_space(config) -> dict[str, dict]:
    """The search space by config key, with the model's limits and the enqueued default.

    Rule: attention heads must divide the model's hidden size and layers cannot exceed the
    checkpoint's layer count (the tiny smoke models have hidden 32 and 2 layers), so choices
    and the range are cut to what the model takes, once per study (Optuna wants fixed
    distributions), and a default outside them moves to the nearest allowed value.

    The default trial (`search.default_trial`): `spec` enqueues the space's `default`s (the SPEC
    addendum's); `config` enqueues the target's own config values, the untuned stage itself,
    a model key left at "the checkpoint's own" read from the checkpoint, and a categorical value
    the space lacks (the clean lr 8e-5) joins the choices: a clean search then starts from the
    defaults it is meant to improve and moves away from them only on validation evidence.
    """
    checkpoint = checkpoint_config(config)
    limits = _limits(checkpoint)
    own = own_values(config, checkpoint) if config.search.default_trial == "config" else {}
    space = {}
    for name, p in config.space.items():
        if p.key == TEMPERATURE_KEY and config.target == "student" and not teacher_kinds(config):
            logging.info("space.%s dropped: no teachers, the temperature does nothing", name)
            continue
        entry = dict(choices=list(p.choices), low=p.low, high=p.high, step=p.step)
        if p.key in own and entry["choices"] and own[p.key] not in entry["choices"]:
            entry["choices"].append(own[p.key])
            logging.info("space.%s: the config's own %r joins the choices", name, own[p.key])
        wanted = list(entry["choices"] or range(p.low, p.high + 1, p.step))
        if limits and p.key == HEADS_KEY and entry["choices"]:
            entry["choices"] = [h for h in entry["choices"] if limits["hidden"] % h == 0]
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
        entry["default"] = _nearest(own.get(p.key, p.default), allowed)
        if p.key in own and entry["default"] != own[p.key]:
            logging.info("space.%s: the config's own %r is outside it", name, own[p.key])
        if list(allowed) != wanted:
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


# Model keys whose config value means "the checkpoint's own" -> that value and the checkpoint
# config's names for it (BERT family first, then DistilBERT's).
CHECKPOINT_KEYS = {
    HEADS_KEY: (0, ("num_attention_heads", "n_heads")),
    LAYERS_KEY: (0, ("num_hidden_layers", "n_layers")),
    "model.hidden_act": ("", ("hidden_act", "activation")),
    "model.hidden_dropout_prob": (-1.0, ("hidden_dropout_prob", "dropout")),
}


def checkpoint_config(config) -> dict | None:
    """The target model's checkpoint config.json, or None when it is unknown (a hub name that
    cannot be read offline, or the emotion MLP, which has no checkpoint)."""
    model = config.trial.model
    if config.target == "teacher_emotion":
        return None
    if config.target == "teacher_audio" and model.name == "tiny-random":
        return model.tiny.to_dict()
    from mh3.weights import resolve_checkpoint

    try:
        return files.read_json(os.path.join(resolve_checkpoint(model.name), "config.json"))
    except (UserError, OSError) as e:
        logging.warning("search space not checked against the model (%s)", e)
        return None


def _get(checkpoint: dict | None, names) -> object:
    return next((checkpoint[n] for n in names if checkpoint and n in checkpoint), None)


def _limits(checkpoint: dict | None) -> dict | None:
    """Hidden size and layer count of the checkpoint (DistilBERT names them dim and n_layers)."""
    if checkpoint is None:
        return None
    return {
        "hidden": _get(checkpoint, ("hidden_size", "dim")),
        "layers": _get(checkpoint, CHECKPOINT_KEYS[LAYERS_KEY][1]),
    }


def own_values(config, checkpoint: dict | None) -> dict:
    """What the untuned target runs, by searched key: `config.trial`'s values, and for a model
    key left at "the checkpoint's own" the checkpoint's value (skipped when unknown)."""
    own = {}
    for p in config.space.values():
        block, leaf = p.key.split(".")
        value = config.trial[block][leaf]
        if p.key in CHECKPOINT_KEYS and value == CHECKPOINT_KEYS[p.key][0]:
            value = _get(checkpoint, CHECKPOINT_KEYS[p.key][1])
        if value is not None:
            own[p.key] = value
    return own


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
    _check_same_space(workdir, trials, space)
    if not trials:
        default = {key: p["default"] for key, p in space.items()}
        default.update({U_PREFIX + k: U_EQUAL for k in weighted_teachers(config)})
        study.enqueue_trial(default)
    failed = (optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.FAIL)
    for i, t in enumerate(trials):
        if t.state == optuna.trial.TrialState.RUNNING:
            logging.warning("trial %d was left running by a kill: marked failed, rerun", t.number)
            storage.set_trial_state_values(t._trial_id, optuna.trial.TrialState.FAIL)
        # A failed trial (a kill, or an error such as a busy workdir or a full disk, which ends
        # the search) is tried again by the rerun, unless a later trial already holds its
        # values: so the enqueued default trial is never lost to an error.
        params = _values(t)
        if t.state in failed and params and all(_values(u) != params for u in trials[i + 1 :]):
            logging.info("trial %d failed: its values are queued again", t.number)
            study.enqueue_trial(params)
    return study


def _distribution(p: dict) -> optuna.distributions.BaseDistribution:
    if p["choices"]:
        return optuna.distributions.CategoricalDistribution(p["choices"])
    return optuna.distributions.IntDistribution(p["low"], p["high"], step=p["step"])


def _check_same_space(workdir: str, trials, space: dict) -> None:
    """A study resumes only with the space it was made with: Optuna refuses a categorical whose
    choices changed, deep inside a trial; say so up front, naming the key and the fix."""
    for t in trials:
        for key, held in t.distributions.items():
            if key in space and held != _distribution(space[key]):
                raise UserError(
                    f"{workdir}/study.db searched {key} over {held}, this config over "
                    f"{_distribution(space[key])} (a changed space, model or mh3 version); "
                    "use another --workdir or the study's settings"
                )


def _values(trial) -> dict:
    """A trial's params; an enqueued trial stopped before it sampled holds them as fixed
    params."""
    return {**trial.system_attrs.get("fixed_params", {}), **trial.params}


def overrides(params: dict, kinds: list[str]) -> dict:
    """A trial's Optuna params as config keys: the teachers' uniform draws become
    `kd.teacher_weights` (normalised, in `teachers` order); the other params are config keys."""
    out = {k: v for k, v in params.items() if not k.startswith(U_PREFIX)}
    if kinds:
        out[WEIGHTS_KEY] = list(teacher_weights([params[U_PREFIX + k] for k in kinds]))
    return out


def trial_config(config, workdir: str, params: dict):
    """`config.trial` with `params` (config key -> value) set and the shared inputs' folders."""
    cfg = copy.deepcopy(config.trial)
    stages.apply_overrides(cfg, params, source=f"trial of {config.target}")
    if config.target in SHARED:
        key, folder = SHARED[config.target]
        cfg[key] = cfg[key] or os.path.join(workdir, folder)
    return cfg


def _suggest(trial: optuna.Trial, space: dict, kinds: list[str]) -> dict:
    params = {
        key: trial.suggest_categorical(key, p["choices"])
        if p["choices"]
        else trial.suggest_int(key, p["low"], p["high"], step=p["step"])
        for key, p in space.items()
    }
    for kind in kinds:
        params[U_PREFIX + kind] = trial.suggest_float(U_PREFIX + kind, 0.0, 1.0)
    return params


def _objective(config, workdir: str, space: dict, trial: optuna.Trial) -> float:
    kinds = weighted_teachers(config)
    values = overrides(_suggest(trial, space, kinds), kinds)
    # What the trial sets on its config: best_params.json and trials.csv are made of these.
    trial.set_user_attr("overrides", values)
    cfg = trial_config(config, workdir, values)
    trial_dir = os.path.join(workdir, "trials", str(trial.number))
    # The student's epochs are reported by its run 0; teachers it trains are not the trial.
    watched = os.path.join(trial_dir, "run0") if config.target == "student" else trial_dir
    if config.target == "student":
        _share_soft_labels(workdir, trial_dir)
    measure = MEASURES[config.search.objective]
    hook = functools.partial(report_epoch, trial, watched, measure=measure)
    with recipe.epoch_hook(hook):
        results = stages.run_stage(cfg, trial_dir)
    if config.search.objective == "whole":
        return float(results["val"]["f1_weighted"])
    return float(last_val(watched)[measure])


def _share_soft_labels(workdir: str, trial_dir: str) -> None:
    """Points the trial's `soft_labels/` at `<workdir>/soft_labels`: the cache is keyed by the
    teacher's parameters and the data, so every trial reads the logits the first one wrote
    instead of running each teacher over the dataset again."""
    shared = os.path.join(workdir, "soft_labels")
    link = os.path.join(trial_dir, "soft_labels")
    os.makedirs(shared, exist_ok=True)
    os.makedirs(trial_dir, exist_ok=True)
    if not os.path.lexists(link):
        os.symlink(shared, link)


def last_val(run_dir: str) -> dict:
    """The last validation record of `<run_dir>/metrics.jsonl` (the last epoch's).

    Raises:
      UserError: the run wrote no validation record (no validation split).
    """
    path = os.path.join(run_dir, "metrics.jsonl")
    last = None
    with open(path) as f:
        for line in f:
            try:
                record = json.loads(line)
            except ValueError:  # a line cut short by a kill: the loop drops it too
                continue
            if record.get("split") == "val":
                last = record
    if last is None:
        raise UserError(f"{path} holds no validation record: the search needs a validation split")
    return last


def report_epoch(
    trial: optuna.Trial, watched: str, workdir: str, epoch: int, record, *, measure="f1_weighted"
) -> None:
    """`recipe.epoch_hook` callback: reports the epoch's validation `measure` (the objective's
    measure, MEASURES) of the watched run.

    Raises:
      optuna.TrialPruned: the pruner stops the trial (the run ends there).
    """
    if record is None or os.path.abspath(workdir) != watched:
        return
    trial.report(float(record[measure]), epoch)
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
    best_params = _overrides_of(best)
    files.write_json(path, best_params)
    out.update(best_value=best.value, best_trial=best.number, best_params=best_params)
    out.update(best_params_file=path, plots=_plot(study, complete, workdir))
    return out


def _overrides_of(trial) -> dict:
    """The config keys the trial set (its Optuna params when it died before recording them)."""
    return trial.user_attrs.get("overrides", trial.params)


def _write_table(trials, path: str) -> str:
    rows = [(t, _overrides_of(t)) for t in trials]
    keys = sorted({k for _, values in rows for k in values})

    def write(tmp):
        with open(tmp, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["number", "state", "value", *keys])
            for t, values in rows:
                value = "" if t.value is None else t.value
                cells = (json.dumps(v) if isinstance(v, list) else v for v in values.values())
                cells = dict(zip(values, cells, strict=True))
                w.writerow([t.number, t.state.name, value, *(cells.get(k, "") for k in keys)])

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
