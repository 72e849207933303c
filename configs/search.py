"""Hyper-parameter search (SPEC stage 5 and addendum "Search (Optuna) per stage") of one stage.

    python launch.py --config=configs/search.py:target=teacher_text,trials=50,dataset=sdcnl \
        --config.trial.data.path=DIR                  # 50 Optuna trials of the text teacher
    python launch.py --config=configs/search.py:target=student,trials=20,smoke
    python launch.py --config=configs/teacher_text.py:dataset=sdcnl --config.data.path=DIR \
        --overrides=runs/search-sdcnl/best_params.json  # train with the best trial's values

Arguments: target (teacher_text, teacher_emotion, teacher_audio or student); trials (finished
or pruned trials wanted in all: a rerun of a killed search runs only the missing ones); dataset,
protocol, smoke (passed to the target's own config file); teachers (student only, passed to
configs/student.py; '' = its default); kd (student only: auto, true or false) searches the
distillation too, each teacher's weight (`kd.teacher_weights`, `search.teacher_weights`) and the
temperature (`space.temperature`, `kd.temperature`): auto = on in clean, never in paper.

`search.objective`: `whole` (clean: validation weighted F1 over the whole validation set of the
model the stage keeps) or `per_batch_mean` (paper: the notebooks' mean of per-batch weighted F1
of the last epoch's validation); each epoch's pruner report uses the same measure.

`trial` is the target's config (configs/<target>.py with the same arguments); every trial starts
from it and sets the sampled values, so any of its keys can be changed for all trials
(`--config.trial.data.path=DIR`, `--config.trial.model.name=DIR`). `space` is the SPEC's search
space of the target: one entry per hyper-parameter, with the config key it sets (`key`), either
`choices` (categorical) or an integer range `low..high` by `step` (when choices is empty), and
the value of the enqueued default trial (`default`, used when `search.default_trial=spec`, the
paper's; clean enqueues the target's own config values instead); e.g. `--config.space.lr.choices=(1e-4,5e-5)`.
"""

import ml_collections

from configs import common, student, teacher_audio, teacher_emotion, teacher_text

ARGS = dict(
    target="", trials=50, dataset="demo", protocol="clean", smoke=False, teachers="", kd="auto"
)
TARGETS = {
    "teacher_text": teacher_text,
    "teacher_emotion": teacher_emotion,
    "teacher_audio": teacher_audio,
    "student": student,
}

DROPOUT = (0.01, 0.05, 0.1, 0.5)
WD = (0.0, 0.01, 0.1)
BERT_LR = (1e-4, 1e-5, 2e-5, 3e-5, 4e-5, 5e-5)
LAYERS = range(2, 13, 2)  # 2..12 step 2
HEADS = (2, 3, 4, 6, 8, 12)
# Distillation temperatures (kd search, clean only): T = 1 is the paper's; the rest double up to
# the range distillation usually uses, softening the teachers' averaged labels.
TEMPERATURES = (1.0, 2.0, 4.0, 8.0)
KD_SPACE = {"temperature": ("kd.temperature", TEMPERATURES, 1.0)}

# target -> name -> (config key, choices or an integer range, default trial's value): the
# SPEC addendum's spaces and enqueued defaults, in its order.
SPACES = {
    "teacher_text": {
        "dropout": ("model.hidden_dropout_prob", DROPOUT, 0.1),
        "wd": ("optim.weight_decay", WD, 0.0),
        "lr": ("optim.learning_rate", BERT_LR, 1e-5),
        "epochs": ("train.epochs", range(2, 6), 3),
        "layers": ("model.num_hidden_layers", LAYERS, 12),
        "heads": ("model.num_attention_heads", HEADS, 12),
    },
    "teacher_emotion": {
        "dropout": ("model.dropout", DROPOUT, 0.1),
        "wd": ("optim.weight_decay", WD, 0.0),
        "layers": ("model.num_layers", range(2, 6), 3),
        "lr": ("optim.learning_rate", (1e-3, 1e-4, 1e-5), 1e-5),
        "hidden": ("model.hidden_size", range(100, 501, 100), 200),
    },
    "teacher_audio": {
        "dropout": ("model.hidden_dropout_prob", DROPOUT, 0.5),
        "lr": ("optim.learning_rate", (1e-3, 1e-4, 1e-5, 5e-5), 5e-5),
        "layers": ("model.num_hidden_layers", LAYERS, 12),
        "heads": ("model.num_attention_heads", HEADS, 12),
        "patience": ("optim.plateau_patience", range(2, 6), 5),
        "factor": ("optim.plateau_factor", (0.1, 0.5), 0.5),
    },
    "student": {  # SPEC stage 5
        "dropout": ("model.hidden_dropout_prob", DROPOUT, 0.5),
        "lr": ("optim.learning_rate", BERT_LR, 1e-4),
        "layers": ("model.num_hidden_layers", LAYERS, 12),
        "heads": ("model.num_attention_heads", HEADS, 12),
        "wd": ("optim.weight_decay", WD, 0.0),
        "epochs": ("train.epochs", range(3, 6), 3),
        "act": ("model.hidden_act", ("relu", "gelu"), "relu"),
    },
}


def _param(key: str, values, default) -> ml_collections.ConfigDict:
    """One search-space entry; a `range` becomes low/high/step with no choices."""
    is_range = isinstance(values, range)
    return ml_collections.ConfigDict(
        dict(
            key=key,
            choices=() if is_range else tuple(values),
            low=values.start if is_range else 0,
            high=values[-1] if is_range else 0,
            step=values.step if is_range else 0,
            default=default,
        )
    )


def _kd_search(args, paper: bool) -> bool:
    """Whether the student search also tunes teacher weights and temperature.

    On by default in clean: the paper fixed equal weights and T = 1 without validating them,
    and a weak teacher (the offline randomly initialised audio teacher) then gets the same say
    as a good one; the enqueued default trial keeps the paper's values, so the search can only
    move away from them on validation evidence. Never in paper: its space is the notebooks'.
    """
    from mh3.errors import UserError

    if args.kd not in ("auto", "true", "false"):
        raise UserError(f"configs/search.py: kd={args.kd!r}; choose auto, true or false")
    if args.teachers and args.target != "student":
        raise UserError(f"configs/search.py: teachers={args.teachers!r} needs target=student")
    if args.kd == "true" and (paper or args.target != "student"):
        raise UserError(
            "configs/search.py: kd=true needs target=student and protocol=clean (the paper "
            "searched neither teacher weights nor temperature)"
        )
    return args.target == "student" and not paper and args.kd != "false"


def get_config(arg: str | None = None):
    from mh3.errors import UserError

    args = common.parse_args(arg, ARGS, __file__)
    if args.target not in TARGETS:
        raise UserError(
            f"configs/search.py: target={args.target!r}; choose one of {', '.join(TARGETS)}"
        )
    if args.trials < 1:
        raise UserError(f"configs/search.py: trials={args.trials}; at least 1")
    paper = args.protocol == "paper"
    kd = _kd_search(args, paper)
    config = common.base("search", args)
    config.target = args.target
    config.trials = args.trials

    config.search = ml_collections.ConfigDict()
    # The notebooks' TPE was unseeded; clean searches seed it with config.seed (repeatable).
    config.search.seeded = not paper
    # paper: the notebooks' objective, the mean of per-batch weighted F1 of the last epoch's
    # validation (it depends on the batch size and the order of the batches); clean: weighted
    # F1 over the whole validation set of the model the stage keeps, a property of the model.
    config.search.objective = "per_batch_mean" if paper else "whole"
    # Each teacher's weight in the averaged soft label (stages/search.py says how it is drawn).
    config.search.teacher_weights = kd
    # The enqueued default trial: paper, the SPEC's (`space.*.default`); clean, the target's
    # own config values (`config.trial`, the checkpoint's own heads, layers, activation and
    # dropout; a value the space lacks joins its choices), so the clean search starts from the
    # clean defaults, not from the paper's starting point, which they were not a point of.
    config.search.default_trial = "spec" if paper else "config"

    space = dict(SPACES[args.target], **(KD_SPACE if kd else {}))
    config.space = ml_collections.ConfigDict(
        {name: _param(*entry) for name, entry in space.items()}
    )
    target_args = f"dataset={args.dataset},protocol={args.protocol},smoke={args.smoke}"
    if args.teachers:
        target_args += f",teachers={args.teachers}"
    config.trial = TARGETS[args.target].get_config(target_args)
    if args.target == "student":
        config.trial.runs = 1  # one student per trial, as the notebooks searched
    return config
