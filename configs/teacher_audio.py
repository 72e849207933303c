"""Fine-tune the audio teacher (AST) on the spoken posts and export it for the student.

    python launch.py --config=configs/teacher_audio.py                  # demo data, tiny random AST
    python launch.py --config=configs/teacher_audio.py:dataset=dreaddit,smoke \
        --config.data.path=../shared/data/dreaddit
    python launch.py --config=configs/teacher_audio.py:dataset=sdcnl,protocol=paper,model=MIT/ast-finetuned-audioset-10-10-0.4593 \
        --config.data.path=DIR --config.audio.wav_dir=DIR_WITH_BARK_WAVS

Arguments: dataset (registry name); model (an AST checkpoint: hub name, local folder, or
`tiny-random`, the default: a SMALL RANDOMLY INITIALISED AST that the stage writes itself so the
pipeline runs offline; its numbers mean nothing about the method); protocol (`clean`:
normalisation statistics from train audio only, the pretrained position table resampled to
512 frames, the best-validation model kept; `paper`: statistics over ALL audio, test included
(the notebooks' leak), a zero-initialised trainable position table, the last epoch kept);
smoke (8 examples per split, a tiny AST on 128 frames, 2 epochs).

Both protocols use the SPEC's best audio-teacher row for the dataset (dropout, lr, layers,
heads, plateau patience and factor; SDCNL's row for datasets the paper did not tune); with
`tiny-random` the architecture comes from config.model.tiny instead of layers/heads.
When the wavs are missing, the stage first runs the tts stage (config.tts) in
`config.tts_workdir` (default `<workdir>/tts`). Every key is set here.
"""

import ml_collections

from configs import common
from configs import tts as tts_config
from mh3.train import optim

AST_AUDIOSET = "MIT/ast-finetuned-audioset-10-10-0.4593"
ARGS = dict(dataset="demo", model="tiny-random", protocol="clean", smoke=False)

# SPEC "audio teacher" best rows: dropout, lr, layers, heads, plateau patience, plateau factor.
PAPER = {
    "sdcnl": (0.01, 5e-5, 8, 8, 4, 0.1),
    "idendep": (0.01, 1e-5, 6, 8, 3, 0.5),
    "deptweet": (0.1, 1e-5, 6, 6, 4, 0.5),
    "twitsuicide": (0.1, 5e-5, 8, 4, 4, 0.5),
}


def get_config(arg: str | None = None):
    args = common.parse_args(arg, ARGS, __file__)
    config = common.base("teacher_audio", args)
    config.data = common.data_config(args.dataset, args.protocol, args.smoke)
    dropout, lr, layers, heads, patience, factor = PAPER.get(args.dataset, PAPER["sdcnl"])
    tiny = args.model == "tiny-random"

    config.audio = ml_collections.ConfigDict()
    config.audio.max_length = 512  # frames (5.12 s), padded or cut
    config.audio.num_mel_bins = 128
    # Whose audio the normalisation mean/std come from: clean = train only; paper = every
    # split, test included (the notebooks' leak, kept only to reproduce them).
    config.audio.stats_splits = ("train", "val", "test") if args.protocol == "paper" else ("train",)
    config.audio.wav_dir = ""  # '' = the tts stage's wavs (run first when missing)
    config.audio.cache_dir = ""  # fbank cache; '' = <workdir>/features

    config.model = ml_collections.ConfigDict()
    config.model.name = args.model  # hub name, local folder or tiny-random
    # How the pretrained position table meets 512 frames (see mh3/weights/ast.py).
    config.model.position_table = "zeros" if args.protocol == "paper" else "resample"
    # Overrides applied to the checkpoint; 0 / -1.0 keep its value.
    config.model.num_hidden_layers = 0 if tiny else layers
    config.model.num_attention_heads = 0 if tiny else heads
    config.model.hidden_dropout_prob = dropout
    config.model.compute_dtype = "float32"  # or bfloat16
    # The tiny-random checkpoint (used only when name == tiny-random): RANDOM weights, a
    # stand-in for the AudioSet AST when no hub is reachable; made for 1,024 frames like it.
    config.model.tiny = ml_collections.ConfigDict()
    config.model.tiny.hidden_size = 32
    config.model.tiny.num_hidden_layers = 2
    # One head: at 512 frames the encoder sees 602 tokens, so with hidden 32 the step's cost is
    # the (heads x 602 x 602) attention scores, not the weights: a train step at batch 32 took
    # 1.49 s with 4 heads and 0.66 s with 1, side by side on the 2-core AMD EPYC (Zen 4).
    config.model.tiny.num_attention_heads = 1
    config.model.tiny.intermediate_size = 64
    config.model.tiny.max_length = 1024

    config.optim = optim.default_config()  # adam_l2 with weight decay 0: plain Adam
    config.optim.learning_rate = lr
    config.optim.plateau_patience = patience  # ReduceLROnPlateau on the validation loss
    config.optim.plateau_factor = factor
    config.train = ml_collections.ConfigDict()
    # SPEC: up to 25 epochs. The clean demo (216 posts, the random tiny AST above) takes 10,
    # like its text teacher: there it only shows the stage running end to end.
    config.train.epochs = 10 if args.dataset == "demo" and args.protocol == "clean" else 25
    config.train.num_steps = 0  # 0 = epochs decide
    config.train.model_choice = "last" if args.protocol == "paper" else "best_val"
    config.train.select_metric = "loss" if args.protocol == "paper" else "f1_weighted"
    config.train.early_stop_patience = 5
    config.train.checkpoint_every_steps = 200
    config.train.checkpoint_min_secs = common.CHECKPOINT_MIN_SECS
    config.train.max_to_keep = 2
    config.train.log_every_steps = 10
    config.train.prng_impl = "rbg"  # dropout keys, as for the text teacher

    # The tts stage this one pulls when the wavs are missing. Its `data` block is not kept
    # here: the stage gives it this config's `data`, so both number the examples the same way.
    config.tts = tts_config.get_config(
        f"dataset={args.dataset},protocol={args.protocol},smoke={args.smoke}"
    )
    del config.tts["data"]
    config.tts.tts.max_examples = 0  # every example needs its wav
    config.tts_workdir = ""  # '' = <workdir>/tts

    if args.smoke:
        config.data.max_per_split = 8
        config.data.batch_size = config.data.eval_batch_size = 8
        config.audio.max_length = 128
        config.train.update(epochs=2, log_every_steps=1, checkpoint_every_steps=0)
        if not tiny:
            config.model.num_hidden_layers = 1
    return config
