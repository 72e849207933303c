"""Score a saved model on the test split of a labelled dataset.

    python launch.py --config=configs/evaluate.py:model=runs/teacher_text-dreaddit/model,dataset=dreaddit \
        --config.data.path=../shared/data/dreaddit

Writes `results.json` (`test`: accuracy, F1 macro/weighted/micro, per-class precision, recall
and F1, ROC-AUC, confusion matrix), `confusion_test.png` and `predictions_test.csv` (one row
per test post: index, id, label, predicted, `p_<class>`). The split is made with the data
settings of `dataset` and `protocol`, as in training; the model's classes must equal the
dataset's. An audio model reads `Sample_<index>.wav` from `wav_dir`.
"""

from configs import common

ARGS = dict(model="", dataset="demo", protocol="clean", smoke=False)


def get_config(arg=None):
    args = common.parse_args(arg, ARGS, __file__)
    config = common.base("evaluate", args)
    config.model = args.model  # a saved model folder
    config.data = common.data_config(args.dataset, args.protocol, args.smoke)
    config.wav_dir = ""  # audio models: the folder with Sample_<index>.wav of this dataset
    return config
