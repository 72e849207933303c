"""The data stage: load, preprocess, split and tokenise a dataset; report counts and padding.

    python launch.py --config=configs/data.py                      # the SYNTHETIC demo data
    python launch.py --config=configs/data.py:dataset=dreaddit \
        --config.data.path=../shared/data/dreaddit

Arguments: dataset (registry name), protocol (clean|paper), smoke. Every key of the `data`
block is in configs/common.data_config and can be set with --config.data.KEY=VALUE.
"""

from configs import common

ARGS = dict(dataset="demo", protocol="clean", smoke=False)


def get_config(arg: str | None = None):
    args = common.parse_args(arg, ARGS, __file__)
    config = common.base("data", args)
    config.data = common.data_config(args.dataset, args.protocol, args.smoke)
    return config
