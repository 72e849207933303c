"""The Optuna search stage: resume after a kill, best params applied, pruning, space limits."""

import csv
import json
import os

import optuna
import pytest

from configs import search as search_config
from configs import teacher_text
from mh3 import stages
from mh3.errors import UserError
from mh3.stages import search


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

    def killing_hook(trial, watched, workdir, epoch, record):
        seen.append(os.path.basename(workdir))
        if os.path.basename(workdir) == "1":
            raise _Killed()
        original(trial, watched, workdir, epoch, record)

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
    # Trial 0 is the enqueued default (heads 12 and 12 layers cut to the tiny model's 8 and 2).
    assert rows[0]["model.num_attention_heads"] == "8" and rows[0]["model.num_hidden_layers"] == "2"
    assert rows[0]["optim.learning_rate"] == "1e-05"
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
