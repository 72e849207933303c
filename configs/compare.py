"""Several finished student workdirs side by side (e.g. no teachers vs text+emotion).

    python launch.py --config=configs/compare.py:workdirs=runs/student-none+runs/student-te \
        --workdir=runs/compare-dreaddit
    python launch.py --config=configs/compare.py --config.workdirs=runs/a+runs/b \
        --config.labels=baseline+distilled

Arguments: workdirs (`+`-joined student workdirs, each finished: results.json, results.csv and
config.json of the student stage); labels (`+`-joined names, one per workdir, in the same order;
'' = each workdir's teacher combination). A path or label holding '+' cannot be given here:
link it under another name.

Writes `comparison.md` (one table: teachers, runs, test accuracy, F1 weighted, F1 macro,
ROC-AUC and validation F1 weighted as mean ± std over each workdir's runs, ddof stated),
`comparison.png` (test F1 weighted with error bars) and `results.json`. The workdirs must share
one dataset and one test split: scores on different test sets are not comparable. Results are
recomputed from each workdir's per-run rows with `std_ddof` (1 = sample std; 0 = population, as
the notebooks' np.std). The stage is skipped when rerun with the same config: after retraining
an input, pass a new --workdir (or delete this one's results.json).
"""

from configs import common

ARGS = dict(workdirs="", labels="")


def get_config(arg=None):
    args = common.parse_args(arg, ARGS, __file__)
    config = common.base("compare", args)
    config.workdirs = args.workdirs  # '+'-joined finished student workdirs
    config.labels = args.labels  # '+'-joined, one per workdir; '' = their teachers
    config.std_ddof = 1  # the std over runs: 1 sample, 0 population (the notebooks' np.std)
    return config
