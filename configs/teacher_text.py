"""Fine-tune a text teacher (BERT family) on a dataset and export it for the student.

    python launch.py --config=configs/teacher_text.py                       # demo data, MiniLM
    python launch.py --config=configs/teacher_text.py:dataset=dreaddit,model=minilm \
        --config.data.path=../shared/data/dreaddit
    python launch.py --config=configs/teacher_text.py:dataset=sdcnl,model=bert-base-uncased,protocol=paper \
        --config.data.path=DIR

Arguments: dataset (registry name), model (checkpoint folder, `minilm` or a hub name), protocol
(`clean`: MiniLM-friendly defaults, best-validation model; `paper`: the SPEC's overrides and
optimizer, relu forced, last epoch kept), smoke (tiny data, one layer, a few steps).
Every key is set here; change any with --config.KEY=VALUE.
"""

import ml_collections

from configs import common
from mh3.train import optim

ARGS = dict(dataset="demo", model="minilm", protocol="clean", smoke=False)

# SPEC "best text teacher" rows: dropout, wd, lr, epochs, layers, heads, batch.
PAPER = {
    "sdcnl": (0.01, 0.0, 5e-5, 4, 4, 12, 64),
    "idendep": (0.05, 0.0, 4e-5, 5, 2, 6, 64),
    "deptweet": (0.01, 0.0, 4e-5, 3, 8, 8, 64),
    "twitsuicide": (0.01, 0.0, 4e-5, 4, 10, 8, 128),
}


def get_config(arg: str | None = None):
    args = common.parse_args(arg, ARGS, __file__)
    config = common.base("teacher_text", args)
    config.data = common.data_config(args.dataset, args.protocol, args.smoke)
    config.data.tokenizer = args.model  # the teacher's own tokenizer

    config.model = ml_collections.ConfigDict()
    config.model.name = args.model
    # Overrides applied to the pretrained model; 0 / "" / -1.0 keep the checkpoint's value.
    config.model.num_hidden_layers = 0
    config.model.num_attention_heads = 0
    config.model.hidden_act = ""
    config.model.hidden_dropout_prob = -1.0  # also the classifier dropout, as in HF BERT
    config.model.compute_dtype = "float32"  # or bfloat16

    config.optim = optim.default_config()
    config.train = ml_collections.ConfigDict()
    # The demo has 216 training posts (7 steps an epoch): 3 epochs would barely move MiniLM.
    config.train.epochs = 10 if args.dataset == "demo" else 3
    config.train.num_steps = 0  # 0 = epochs decide
    config.train.model_choice = "best_val"
    config.train.select_metric = "f1_weighted"
    config.train.early_stop_patience = 0
    config.train.checkpoint_every_steps = 200
    config.train.max_to_keep = 2
    config.train.log_every_steps = 10
    # The PRNG behind the dropout keys. mh3's Dropout hashes its masks from the key, so the
    # choice no longer changes the speed (README, Performance); rbg is kept for reproducibility
    # of earlier runs.
    config.train.prng_impl = "rbg"

    if args.protocol == "paper":
        dropout, wd, lr, epochs, layers, heads, batch = PAPER.get(args.dataset, PAPER["sdcnl"])
        config.model.num_hidden_layers = layers
        config.model.num_attention_heads = heads
        config.model.hidden_act = "relu"  # SPEC quirk: forced on BERT/RoBERTa
        config.model.hidden_dropout_prob = dropout
        config.optim.update(name="adam_l2", learning_rate=lr, weight_decay=wd)
        config.train.update(epochs=epochs, model_choice="last", select_metric="loss")
        config.data.batch_size = config.data.eval_batch_size = batch
    else:
        # MiniLM-sized checkpoints like a larger rate than BERT-base; warm-up steadies the start.
        config.optim.update(
            name="adamw", learning_rate=8e-5, weight_decay=0.01, schedule="warmup_linear",
            warmup_ratio=0.1, clip_norm=1.0,
        )  # fmt: skip
    if args.smoke:
        config.model.num_hidden_layers = 1
        config.train.update(epochs=1, num_steps=3, log_every_steps=1, checkpoint_every_steps=2)
        config.optim.warmup_steps = 1
        config.data.batch_size = config.data.eval_batch_size = 8
    return config
