"""The Optuna search stage: resume after a kill, best params applied, pruning, space limits,
the paper's per-batch objective and the clean student search of teacher weights/temperature."""

import csv
import json
import os

import optuna
import pytest

from configs import search as search_config
from configs import student as student_config
from configs import teacher_text
from mh3 import stages
from mh3.errors import UserError
from mh3.stages import search
from mh3.stages import student as student_stage


class _Killed(BaseException):
    """Stands in for SIGKILL: Optuna does not catch it, so the trial stays RUNNING."""


def _config(tiny_bert, trials=3):
    config = search_config.get_config(f"target=teacher_text,trials={trials},smoke")
    config.trial.model.name = config.trial.data.tokenizer = tiny_bert
    config.trial.data.bucketing = False  # one batch shape: fewer compiles
    return config


@pytest.fixture(scope="module")
def searched(tiny_bert, tmp_path_factory):
    """A 3-trial search killed during trial 1 (trial 0 finished), then rerun to the end."""
    workdir = str(tmp_path_factory.mktemp("search") / "s")
    seen = []

    def killing_hook(trial, watched, workdir, epoch, record, **kw):
        seen.append(os.path.basename(workdir))
        if os.path.basename(workdir) == "1":
            raise _Killed()
        original(trial, watched, workdir, epoch, record, **kw)

    original = search.report_epoch
    search.report_epoch = killing_hook
    try:
        with pytest.raises(_Killed):
            stages.run_stage(_config(tiny_bert), workdir)
    finally:
        search.report_epoch = original
    first = os.path.getmtime(os.path.join(workdir, "trials", "0", "results.json"))
    results = stages.run_stage(_config(tiny_bert), workdir)
    return workdir, results, first, seen


def test_a_killed_search_resumes_without_rerunning_finished_trials(searched, tiny_bert):
    workdir, results, first_mtime, seen = searched
    assert seen == ["0", "1"]  # the kill came in trial 1, after trial 0 finished
    assert results["trials"] == {"COMPLETE": 3, "FAIL": 1}  # 3 counted trials, not 6
    assert os.path.getmtime(os.path.join(workdir, "trials", "0", "results.json")) == first_mtime
    rows = list(csv.DictReader(open(os.path.join(workdir, "trials.csv"))))
    assert [r["state"] for r in rows] == ["COMPLETE", "FAIL", "COMPLETE", "COMPLETE"]
    # The killed trial's values are tried again by the next trial.
    params = [k for k in rows[0] if "." in k]
    assert [rows[1][k] for k in params] == [rows[2][k] for k in params]
    # The seeded sampler does not replay its pre-kill draws after the restart.
    assert [rows[2][k] for k in params] != [rows[3][k] for k in params]
    # Trial 0 is the enqueued default, in clean mode the untuned stage: the tiny checkpoint's
    # own 4 heads, 2 layers and dropout 0.1, the clean lr 8e-5 (not among SPEC's choices).
    assert rows[0]["model.num_attention_heads"] == "4" and rows[0]["model.num_hidden_layers"] == "2"
    assert rows[0]["optim.learning_rate"] == "8e-05"
    assert rows[0]["model.hidden_dropout_prob"] == "0.1"
    # A rerun of the finished search runs nothing.
    assert stages.run_stage(_config(tiny_bert), workdir)["trials"] == results["trials"]


def test_best_params_file_sets_the_best_trials_values(searched):
    workdir, results, _, _ = searched
    best = json.load(open(os.path.join(workdir, "best_params.json")))
    assert best == results["best_params"] and set(best) == set(
        search_config.SPACES["teacher_text"][n][0] for n in search_config.SPACES["teacher_text"]
    )
    config = teacher_text.get_config("smoke")
    stages.apply_overrides_file(config, os.path.join(workdir, "best_params.json"))
    trial = json.load(
        open(os.path.join(workdir, "trials", str(results["best_trial"]), "config.json"))
    )
    for key, value in best.items():
        block, leaf = key.split(".")
        assert config[block][leaf] == trial[block][leaf] == value
    assert results["best_value"] == max(
        float(r["value"])
        for r in csv.DictReader(open(os.path.join(workdir, "trials.csv")))
        if r["value"]
    )
    for name in ("optimization_history", "param_importances"):
        assert os.path.getsize(os.path.join(workdir, f"{name}.png")) > 0


def test_the_hook_reports_each_epoch_and_prunes_a_bad_trial():
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.MedianPruner())

    def stub(trial):
        value = 0.1 if trial.number == 5 else 0.8  # MedianPruner waits for 5 finished trials
        for epoch in range(3):
            search.report_epoch(trial, "/w/other", "/w/teachers", epoch, {"f1_weighted": 0.0})
            search.report_epoch(trial, "/w/t", "/w/t", epoch, {"f1_weighted": value})
        return value

    study.optimize(stub, n_trials=6)
    states = [t.state for t in study.trials]
    assert states[:5] == [optuna.trial.TrialState.COMPLETE] * 5
    assert states[5] == optuna.trial.TrialState.PRUNED
    assert study.trials[5].intermediate_values == {0: 0.1}  # stopped after its first epoch
    assert study.trials[0].intermediate_values == {0: 0.8, 1: 0.8, 2: 0.8}


def test_bad_input_is_one_line():
    with pytest.raises(UserError, match="target='bert'"):
        search_config.get_config("target=bert,trials=2")
    with pytest.raises(UserError, match="trials=0"):
        search_config.get_config("target=student,trials=0")
    config = teacher_text.get_config("smoke")
    with pytest.raises(UserError, match="model.nope"):
        stages.apply_overrides(config, {"model.nope": 1})


def test_per_batch_mean_is_the_last_epochs_val_batch_mean(tiny_bert, tmp_path):
    """The paper objective: the trial's value is `f1_weighted_batch_mean` of the last val
    record in its metrics.jsonl, and the pruner got that measure each epoch."""
    assert search_config.get_config("target=teacher_text,protocol=paper").search.objective == (
        "per_batch_mean"
    )
    config = _config(tiny_bert, trials=1)  # only the enqueued default trial
    config.search.objective = "per_batch_mean"
    config.trial.train.num_steps = 0  # the default trial's epochs decide: 2
    config.space.epochs.default = 2
    config.trial.data.batch_size = 48  # one step per epoch
    config.trial.data.eval_batch_size = 8  # several validation batches to average over
    workdir = str(tmp_path / "s")
    results = stages.run_stage(config, workdir)
    lines = open(os.path.join(workdir, "trials", "0", "metrics.jsonl"))
    val = [r for r in map(json.loads, lines) if r.get("split") == "val"]
    assert len(val) == 2
    assert results["best_value"] == val[-1]["f1_weighted_batch_mean"]
    trial = optuna.load_study(study_name="teacher_text", storage=f"sqlite:///{workdir}/study.db")
    reported = trial.trials[0].intermediate_values
    assert reported == {r["epoch"]: r["f1_weighted_batch_mean"] for r in val}


def test_kd_space_only_in_the_clean_student_search():
    clean = search_config.get_config("target=student,trials=2")
    assert clean.search.teacher_weights and clean.space.temperature.key == "kd.temperature"
    assert clean.space.temperature.default == 1.0
    assert search.weighted_teachers(clean) == ["text", "emotion", "audio"]
    for arg in ("protocol=paper", "kd=false"):
        config = search_config.get_config(f"target=student,trials=2,{arg}")
        assert not config.search.teacher_weights and "temperature" not in config.space
        assert search.weighted_teachers(config) == []
    with pytest.raises(UserError, match="kd=true"):
        search_config.get_config("target=student,protocol=paper,kd=true")
    # A paper search given the kd space anyway is refused before any work.
    paper = search_config.get_config("target=student,protocol=paper")
    paper.search.teacher_weights = True
    with pytest.raises(UserError, match="protocol=paper"):
        search._check(paper)
    # One teacher: its normalised weight is always 1, so no weight is searched.
    single = search_config.get_config("target=student,teachers=text")
    assert single.search.teacher_weights and search.weighted_teachers(single) == []


def test_sampled_teacher_weights_are_valid_and_usable_by_the_student_config():
    config = search_config.get_config("target=student,teachers=text+emotion")
    kinds = search.weighted_teachers(config)
    space = {"kd.temperature": dict(choices=[1.0, 2.0, 4.0, 8.0], low=0, high=0, step=0)}
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=0))
    study.enqueue_trial(
        {"kd.temperature": 1.0, **{search.U_PREFIX + k: search.U_EQUAL for k in kinds}}
    )
    seen = []

    def objective(trial):
        values = search.overrides(search._suggest(trial, space, kinds), kinds)
        seen.append(values)
        weights = values["kd.teacher_weights"]
        return weights[0] if weights else 0.5

    study.optimize(objective, n_trials=12)
    assert seen[0] == {"kd.temperature": 1.0, "kd.teacher_weights": []}  # equal: the default
    for values in seen[1:]:
        weights = values["kd.teacher_weights"]
        assert len(weights) == len(kinds) and min(weights) >= 0
        assert sum(weights) == pytest.approx(1.0, abs=1e-3)
    assert search.teacher_weights([0.0, 0.0]) == ()
    # best_params.json values go straight onto the student config (a JSON list -> tuple).
    student = student_config.get_config("teachers=text+emotion")
    stages.apply_overrides(student, json.loads(json.dumps(seen[1])))
    assert student.kd.teacher_weights == tuple(seen[1]["kd.teacher_weights"])
    assert student_stage._check(student)[1] == student.kd.teacher_weights


def test_a_trial_failed_by_an_error_is_queued_again_by_the_rerun(tmp_path):
    """An error (here a busy workdir) ends the search; the rerun retries the failed trial's
    values, the enqueued default included, but not those a later trial already ran."""
    config = search_config.get_config("target=teacher_emotion,trials=3")
    space = search.constrained_space(config)
    workdir = str(tmp_path)
    study = search._open_study(config, workdir, space)

    def busy(trial):
        search._suggest(trial, space, [])
        raise UserError("workdir busy")

    with pytest.raises(UserError):
        study.optimize(busy, n_trials=1)
    study = search._open_study(config, workdir, space)  # the rerun
    waiting = study.get_trials(states=(optuna.trial.TrialState.WAITING,))
    default = {key: p["default"] for key, p in space.items()}
    assert [t.system_attrs["fixed_params"] for t in waiting] == [default]
    study.optimize(lambda trial: sum(search._suggest(trial, space, []).values()), n_trials=1)
    study = search._open_study(config, workdir, space)  # retried already: nothing queued
    assert not study.get_trials(states=(optuna.trial.TrialState.WAITING,))


def test_the_default_trial_is_specs_in_paper_and_the_untuned_stage_in_clean(tiny_bert, tmp_path):
    """paper enqueues the SPEC addendum's defaults (cut to the model); clean enqueues the
    target's own config values, the checkpoint's own for keys left at "the checkpoint's"."""
    defaults = {}
    for protocol in ("paper", "clean"):
        config = search_config.get_config(
            f"target=student,dataset=dreaddit,protocol={protocol},teachers=text"
        )
        config.trial.model.name = tiny_bert
        defaults[protocol] = {k: p["default"] for k, p in search.constrained_space(config).items()}
    assert defaults["paper"] == {
        "model.hidden_dropout_prob": 0.5, "optim.learning_rate": 1e-4,
        "model.num_hidden_layers": 2, "model.num_attention_heads": 8,  # 12 cut to hidden 32
        "optim.weight_decay": 0.0, "train.epochs": 3, "model.hidden_act": "relu",
    }  # fmt: skip
    assert defaults["clean"] == {
        "model.hidden_dropout_prob": 0.1, "optim.learning_rate": 8e-5,
        "model.num_hidden_layers": 2, "model.num_attention_heads": 4,
        "optim.weight_decay": 0.01, "train.epochs": 3, "model.hidden_act": "gelu",
        "kd.temperature": 1.0,
    }  # fmt: skip
    # A value outside an integer range (the demo student's 10 epochs; the range is 3..5) moves to
    # the nearest allowed one.
    demo = search_config.get_config("target=student,teachers=text")
    demo.trial.model.name = tiny_bert
    assert search.constrained_space(demo)["train.epochs"]["default"] == 5
    clean = search_config.get_config("target=student,dataset=dreaddit,teachers=text")
    clean.trial.model.name = tiny_bert
    space = search.constrained_space(clean)
    assert 8e-5 in space["optim.learning_rate"]["choices"]
    # A study made with another space (here SPEC's lr choices, without 8e-5) is refused in one
    # line before any trial runs, not deep inside Optuna.
    lr = {**space["optim.learning_rate"], "choices": [1e-4], "default": 1e-4}
    old = {**space, "optim.learning_rate": lr}
    study = search._open_study(clean, str(tmp_path), old)
    study.optimize(lambda t: 0.0 * len(search._suggest(t, old, [])), n_trials=1)
    with pytest.raises(UserError, match="optim.learning_rate over .*another --workdir"):
        search._open_study(clean, str(tmp_path), space)
