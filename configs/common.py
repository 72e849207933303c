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
    data.num_buckets = 6  # at most this many distinct lengths, i.e. jit-compiled shapes
    data.bucket_multiple = 8  # bucket lengths are multiples of this (or max_len)
    data.group_batches = 50  # training: sort by length within windows of this many batches
    return data
