"""Describe a checkpoint: load it with from_hf, print its size and a forward pass.

python launch.py --config=configs/describe.py                 # MiniLM (offline)
python launch.py --config=configs/describe.py:model=/path/to/hf/folder
python launch.py --config=configs/describe.py --config.sentence="I can't sleep."
"""

from configs import common

ARGS = dict(model="minilm", smoke=False)


def get_config(arg=None):
    args = common.parse_args(arg, ARGS, __file__)
    config = common.base("describe", args)
    config.model = args.model
    config.num_labels = 0  # 0: the checkpoint's own head (or none)
    config.sentence = "I haven't slept properly in weeks and work feels impossible."
    return config
