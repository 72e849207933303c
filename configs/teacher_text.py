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

    common.text_finetune(config, args.model, args.dataset)

    if args.protocol == "paper":
        dropout, wd, lr, epochs, layers, heads, batch = PAPER.get(args.dataset, PAPER["sdcnl"])
        config.model.num_hidden_layers = layers
        config.model.num_attention_heads = heads
        # SPEC quirk: forced on BERT/RoBERTa; DistilBERT keeps GELU (model.hidden_act_families)
        config.model.hidden_act = "relu"
        config.model.hidden_dropout_prob = dropout
        config.optim = optim.default_config()  # the notebooks' plain Adam, no schedule or clipping
        config.optim.update(name="adam_l2", learning_rate=lr, weight_decay=wd)
        config.train.update(epochs=epochs, model_choice="last", select_metric="loss")
        config.data.batch_size = config.data.eval_batch_size = batch
    if args.smoke:
        common.text_finetune_smoke(config)
    return config
