"""The emotion teacher (SPEC stage 3): a frozen MM-EMOG table under a small MLP.

python launch.py --config=configs/teacher_emotion.py:dataset=dreaddit \
    --config.data.path=../shared/data/dreaddit
python launch.py --config=configs/teacher_emotion.py:dataset=sdcnl,protocol=paper \
    --config.data.path=DIR --config.table=mmemog_sdcnl.pkl   # the authors' released table

Without `table`, the emotion-embedding stage (configs/emotion_embeddings.py, its settings under
`embeddings`) runs first in `<workdir>/emotion_embeddings`, or is reused when it already ran
there with the same settings. Hyperparameters are the paper's best for its datasets (SPEC) and
CPU-friendly defaults elsewhere; each can be overridden (`--config.model.num_layers=3`).
"""

import ml_collections

from configs import common, emotion_embeddings
from mh3.train import optim

ARGS = dict(dataset="demo", protocol="clean", smoke=False, encoder="")

# dataset -> (dropout, weight decay, learning rate, layers, hidden): SPEC stage 3.
BEST = {
    "sdcnl": (0.01, 0.0, 1e-5, 5, 100),
    "idendep": (0.05, 0.1, 1e-4, 3, 100),
    "deptweet": (0.1, 0.01, 1e-4, 4, 400),
    "twitsuicide": (0.1, 0.0, 1e-5, 2, 400),
}
DEFAULT = (0.1, 0.0, 1e-4, 2, 100)


def get_config(arg=None):
    args = common.parse_args(arg, ARGS, __file__)
    paper = args.protocol == "paper"
    config = common.base("teacher_emotion", args)
    config.data = common.data_config(args.dataset, args.protocol, args.smoke)
    if paper and not args.smoke:
        # SPEC addendum: the notebooks' emotion batches, 64 (TwitSuicide 128).
        size = 128 if args.dataset == "twitsuicide" else 64
        config.data.batch_size = config.data.eval_batch_size = size

    # An MM-EMOG table file (our table.npz or the authors' pickle); '' = build it with the
    # `embeddings` settings (their `data` block is replaced by this config's).
    config.table = ""
    config.embeddings_workdir = ""  # '' = <workdir>/emotion_embeddings
    embed_arg = ",".join(f"{k}={v}" for k, v in dict(args).items() if k in emotion_embeddings.ARGS)
    config.embeddings = emotion_embeddings.get_config(embed_arg)
    config.table_seed = 123  # uniform [0, 1) rows for pieces the table does not cover

    dropout, wd, lr, layers, hidden = BEST.get(args.dataset, DEFAULT)
    config.model = ml_collections.ConfigDict()
    config.model.num_layers = layers
    config.model.hidden_size = 16 if args.smoke else hidden
    config.model.dropout = dropout
    config.model.output_relu = paper  # the paper's ReLU + dropout on the logits (quirk)

    config.optim = optim.default_config()
    config.optim.name = "adam_l2"  # torch Adam(weight_decay): L2 added to the gradient
    config.optim.learning_rate = lr
    config.optim.weight_decay = wd

    config.train = ml_collections.ConfigDict()
    config.train.epochs = 2 if args.smoke else 100
    config.train.num_steps = 0
    # paper: the last model, after the SPEC early-stopping rule; clean: the epoch with the best
    # validation weighted F1 (never test).
    config.train.model_choice = "last" if paper else "best_val"
    config.train.select_metric = "f1_weighted"
    config.train.early_stop_patience = 10
    config.train.checkpoint_every_steps = 0
    config.train.checkpoint_min_secs = common.CHECKPOINT_MIN_SECS
    config.train.max_to_keep = 2
    config.train.log_every_steps = 10
    return config
