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
