"""Every config value checked before any work starts (issue #16): one line naming the key.

The config files are the schema (every key is set there, with its type); this module adds the
ranges. A rule applies to every key whose dotted name ends with the rule's name, in any stage
and any nested block (`data.batch_size` also covers `teacher_text.data.batch_size`), so a new
stage config is covered without being listed. `check(config)` runs in `run_stage`, before the
workdir is touched.
"""

from mh3 import weights
from mh3.errors import UserError
from mh3.train import checkpoints, metrics

_FRACTION = ("a fraction in [0, 1)", lambda v: 0 <= v < 1)
# key-name ending -> (what is allowed, test)
RULES = {
    "data.batch_size": ("an integer >= 1", lambda v: v >= 1),
    "data.eval_batch_size": ("an integer >= 1", lambda v: v >= 1),
    "data.max_len": ("an integer >= 2 (room for [CLS] and [SEP])", lambda v: v >= 2),
    "data.max_per_split": ("an integer >= 0 (0 = all)", lambda v: v >= 0),
    "data.val_fraction": _FRACTION,
    "data.test_fraction": _FRACTION,
    "data.num_buckets": ("an integer >= 1", lambda v: v >= 1),
    "data.bucket_multiple": ("an integer >= 1", lambda v: v >= 1),
    "data.group_batches": ("an integer >= 0", lambda v: v >= 0),
    "train.epochs": ("an integer >= 0", lambda v: v >= 0),
    "train.num_steps": ("an integer >= 0 (0 = epochs decide)", lambda v: v >= 0),
    "train.early_stop_patience": ("an integer >= 0 (0 = off)", lambda v: v >= 0),
    "train.max_to_keep": ("an integer >= 1", lambda v: v >= 1),
    "train.log_every_steps": ("an integer >= 1", lambda v: v >= 1),
    "train.checkpoint_every_steps": ("an integer >= 0 (0 = epoch ends)", lambda v: v >= 0),
    "train.checkpoint_min_secs": ("a number >= 0 (0 = every epoch end)", lambda v: v >= 0),
    "train.model_choice": ("last or best_val", lambda v: v in ("last", "best_val")),
    "train.select_metric": (
        f"loss or one of {metrics.SCORES}",
        lambda v: v == "loss" or v in metrics.SCORES,
    ),
    "optim.learning_rate": ("a number > 0", lambda v: v > 0),
    "optim.weight_decay": ("a number >= 0", lambda v: v >= 0),
    "optim.warmup_ratio": ("a fraction in [0, 1]", lambda v: 0 <= v <= 1),
    "optim.warmup_steps": ("an integer >= 0", lambda v: v >= 0),
    "optim.clip_norm": ("a number >= 0 (0 = off)", lambda v: v >= 0),
    "optim.accumulate_steps": ("an integer >= 1", lambda v: v >= 1),
    "optim.plateau_patience": ("an integer >= 0 (0 = off)", lambda v: v >= 0),
    "optim.plateau_factor": ("a factor in (0, 1)", lambda v: 0 < v < 1),
    "model.hidden_dropout_prob": ("-1 (keep) or a rate in [0, 1)", lambda v: v == -1 or 0 <= v < 1),
    "model.dropout": _FRACTION,
    "model.compute_dtype": (f"one of {list(weights.DTYPES)}", lambda v: v in weights.DTYPES),
    "kd.temperature": ("a number > 0", lambda v: v > 0),
    "runs": ("an integer >= 1", lambda v: v >= 1),
    "tts.workers": ("an integer >= 0 (0 = one per CPU core)", lambda v: v >= 0),
}


def check(config) -> None:
    """Raises a UserError naming the first config value out of its range, and the fix."""
    flat = checkpoints.flatten(config.to_dict())
    for name, value in flat.items():
        for ending, (allowed, ok) in RULES.items():
            if (name == ending or name.endswith("." + ending)) and not ok(value):
                raise UserError(f"config {name}={value!r} is out of range; use {allowed}")
    for name, epochs in flat.items():
        if name == "train.epochs" or name.endswith(".train.epochs"):
            steps = flat[name[: -len("epochs")] + "num_steps"]
            if epochs == 0 and steps == 0:
                raise UserError(
                    f"config {name}=0 and {name[: -len('epochs')]}num_steps=0: nothing would "
                    "be trained; set either above 0"
                )
