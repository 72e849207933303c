"""Pieces every stage config shares: argument parsing and the blocks all stages carry.

A config file declares its arguments with their defaults, e.g.
`ARGS = dict(dataset="demo", model="minilm", protocol="clean", smoke=False)`, and calls
`parse_args(arg, ARGS, __file__)` on the string after the colon in
`--config=configs/<stage>.py:dataset=dreaddit,smoke`. A bare name sets a boolean to True.
"""

import os

import ml_collections

from mh3.errors import UserError

PROTOCOLS = ("clean", "paper")
# train.checkpoint_min_secs of every trained stage: epoch-end checkpoints at most once a minute
# (mh3.train.loop), so short epochs do not each pay a save; a killed run loses at most this
# long plus one epoch of work.
CHECKPOINT_MIN_SECS = 60.0


def parse_args(arg: str | None, defaults: dict, source: str) -> ml_collections.ConfigDict:
    """Parses `k=v,flag,...` against `defaults`, coercing each value to its default's type.

    Raises:
      UserError: an unknown argument or a value of the wrong type, naming the config file.
    """
    where = os.path.relpath(source)
    values = dict(defaults)
    for item in filter(None, (arg or "").split(",")):
        key, eq, raw = item.partition("=")
        key = key.strip()
        if key not in defaults:
            raise UserError(
                f"{where}: unknown argument {key!r}; known arguments: {', '.join(defaults)}"
            )
        default = defaults[key]
        if isinstance(default, bool):
            if not eq:
                values[key] = True
            elif raw.lower() in ("1", "true", "yes"):
                values[key] = True
            elif raw.lower() in ("0", "false", "no"):
                values[key] = False
            else:
                raise UserError(f"{where}: argument {key}={raw!r} must be true or false")
        elif not eq:
            raise UserError(f"{where}: argument {key!r} needs a value, e.g. {key}={default}")
        else:
            try:
                values[key] = type(default)(raw) if default is not None else raw
            except ValueError:
                raise UserError(
                    f"{where}: argument {key}={raw!r} must be a {type(default).__name__}"
                ) from None
    if "protocol" in values and values["protocol"] not in PROTOCOLS:
        raise UserError(f"{where}: protocol={values['protocol']!r}; choose one of {PROTOCOLS}")
    return ml_collections.ConfigDict(values)


def base(stage: str, args: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The keys every stage config holds: stage, seed, protocol, smoke, dataset."""
    config = ml_collections.ConfigDict()
    config.stage = stage
    config.seed = 0
    config.smoke = bool(args.get("smoke", False))
    config.protocol = args.get("protocol", "clean")
    config.dataset = args.get("dataset", "")
    return config


def data_config(dataset: str, protocol: str, smoke: bool) -> ml_collections.ConfigDict:
    """The `data` block every stage config carries (read by mh3.data; every key is set here).

    Args:
      dataset: a registry name (mh3.data.registry.NAMES).
      protocol: 'clean' (stratified seeded validation split, added tokens from train only) or
        'paper' (the notebooks' seed-123 split, added tokens from every split).
      smoke: tiny sizes (at most 48 examples per split, small batches).

    Raises:
      UserError: `dataset` is not in the registry.
    """
    from mh3.data import registry

    known = registry.defaults(dataset)
    data = ml_collections.ConfigDict()
    data.name = dataset
    data.format = known["format"]  # csv, jsonl, folders (IdenDep) or demo
    data.path = ""  # the dataset folder; --config.data.path=DIR
    data.files = ml_collections.ConfigDict(known["files"])  # split -> file name, '' = none
    data.optional_files = tuple(known["optional_files"])  # splits whose file may be absent
    data.text_columns = tuple(known["text_columns"])  # joined with one space
    data.label_column = known["label_column"]
    data.id_column = known["id_column"]  # '' = "<file stem>:<row>"
    data.split_column = ""  # csv/jsonl: a column holding train/val/test instead of files
    data.classes = tuple(known["classes"])  # names in label order; () = sorted train values
    data.label_values = tuple(known["label_values"])  # raw values in the same order
    data.encoding = "utf-8"
    data.empty_text = "error"  # or 'drop': skip rows with empty text, logging how many
    data.split = "paper" if protocol == "paper" else "clean"  # validation rule
    data.val_fraction = 0.1  # of train, when there is no validation file
    data.test_fraction = 0.1  # of all rows, when there is no test file (SAD, IdenDep)
    data.split_seed = 123
    data.max_per_split = 48 if smoke else 0  # 0 = all
    data.tokenizer = "minilm"  # checkpoint folder, alias or hub name
    data.max_len = 256  # cap; the length is min(cap, longest tokenised train text)
    data.added_token_splits = ("train", "val", "test") if protocol == "paper" else ("train",)
    data.batch_size = 8 if smoke else 32  # global, over all processes and devices
    data.eval_batch_size = 8 if smoke else 32  # = batch_size: eval reuses the train shapes
    data.bucketing = True  # pad batches to a few fixed lengths instead of max_len
    # at most this many distinct lengths, i.e. jit-compiled shapes. Each costs a trace and a
    # compile of every step (MiniLM's train step: ~3 s + 6-9 s), which short data does not earn
    # back: the demo's posts have at most 37 tokens, and its text teacher took 95 s with one
    # length against 108-117 s with two, the same hour (110 s with six, another day). Smoke
    # runs keep two, the least that still runs the multi-shape path.
    data.num_buckets = 2 if smoke else 1 if dataset == "demo" else 6
    data.bucket_multiple = 8  # bucket lengths are multiples of this (or max_len)
    # training: sort by length within windows of this many batches; 0 = uniform shuffles
    # (the notebooks': protocol=paper), still padded to the bucket lengths
    data.group_batches = 0 if protocol == "paper" else 50
    return data


def text_finetune(config: ml_collections.ConfigDict, model: str, dataset: str) -> None:
    """Sets the `model`, `optim` and `train` blocks of a BERT-family fine-tune (the recipe in
    mh3.train.finetune, shared by the text teacher and the student) to the clean protocol's
    values. Callers put the paper's values on top, then call `text_finetune_smoke`."""
    from mh3.train import optim

    config.model = ml_collections.ConfigDict()
    config.model.name = model
    # Overrides applied to the pretrained model; 0 / "" / -1.0 keep the checkpoint's value.
    config.model.num_hidden_layers = 0
    config.model.num_attention_heads = 0
    config.model.hidden_act = ""
    config.model.hidden_dropout_prob = -1.0  # also the classifier dropout, as in HF BERT
    # Checkpoint families (model_type) the hidden_act override reaches, and those whose
    # attention dropout also takes hidden_dropout_prob. The notebooks passed BERT's key names,
    # so DistilBERT (ClinicalBERT) kept GELU while its `dropout` and `attention_dropout` both
    # took the tuned value; BERT/RoBERTa kept attention dropout 0.1 (misspelled key).
    paper = config.protocol == "paper"
    every = ("bert", "roberta", "distilbert")
    config.model.hidden_act_families = ("bert", "roberta") if paper else every
    config.model.attention_dropout_families = ("distilbert",) if paper else ()
    config.model.compute_dtype = "float32"  # or bfloat16

    # MiniLM-sized checkpoints like a larger rate than BERT-base; warm-up steadies the start.
    config.optim = optim.default_config()
    config.optim.update(
        name="adamw", learning_rate=8e-5, weight_decay=0.01, schedule="warmup_linear",
        warmup_ratio=0.1, clip_norm=1.0,
    )  # fmt: skip

    config.train = ml_collections.ConfigDict()
    # The demo has 216 training posts (7 steps an epoch): 3 epochs would barely move MiniLM.
    config.train.epochs = 10 if dataset == "demo" else 3
    config.train.num_steps = 0  # 0 = epochs decide
    config.train.model_choice = "best_val"
    config.train.select_metric = "f1_weighted"
    config.train.early_stop_patience = 0
    config.train.checkpoint_every_steps = 200
    config.train.checkpoint_min_secs = CHECKPOINT_MIN_SECS
    config.train.max_to_keep = 2
    config.train.log_every_steps = 10
    # The PRNG behind the dropout keys. mh3's Dropout hashes its masks from the key, so the
    # choice does not change the speed (README, Performance); rbg keeps earlier runs' keys.
    config.train.prng_impl = "rbg"


def text_finetune_smoke(config: ml_collections.ConfigDict) -> None:
    """Tiny settings for a `text_finetune` config: one layer, 3 steps, batches of 8."""
    config.model.num_hidden_layers = 1
    config.train.update(epochs=1, num_steps=3, log_every_steps=1, checkpoint_every_steps=2)
    config.optim.warmup_steps = 1
    config.data.batch_size = config.data.eval_batch_size = 8
