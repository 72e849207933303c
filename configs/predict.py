"""Label new posts with a saved model: `predictions.csv` in the workdir.

    python launch.py --config=configs/predict.py:model=runs/student-demo/run0/model \
        --config.input=posts.csv [--workdir=runs/predict]

`input` is a CSV (with a header) or JSONL file with a text column (`text_column`), or a plain
text file (.txt) with one post per line. Labels are not needed. For an audio model the column
(or each line) holds a wav path instead. Output columns: `id` (the `id_column` value, or the
row number from 1), `predicted` (class name), then `p_<class>` per class.
"""

from configs import common

ARGS = dict(model="", smoke=False)


def get_config(arg=None):
    args = common.parse_args(arg, ARGS, __file__)
    config = common.base("predict", args)
    config.model = args.model  # a saved model folder (<workdir>/model, <workdir>/run<r>/model)
    config.input = ""  # .csv, .jsonl, or .txt (one post per line)
    config.text_column = "text"  # csv/jsonl: the column with the post (audio: the wav path)
    config.id_column = ""  # csv/jsonl: a column to copy as `id`; '' = row number
    config.encoding = "utf-8"
    return config
