"""The 3M-Health student: a text-only BERT distilled from the chosen teachers (SPEC stage 4).

    python launch.py --config=configs/student.py            # the whole pipeline, offline demo
    python launch.py --config=configs/student.py:dataset=dreaddit,teachers=text+emotion+audio,runs=3 \
        --config.data.path=../shared/data/dreaddit
    python launch.py --config=configs/student.py:dataset=sdcnl,protocol=paper,runs=10 \
        --config.data.path=DIR          # the paper's checkpoints: needs a model hub and a GPU

Arguments: dataset (registry name); teachers (`+`-joined subset of text, emotion, audio;
`none` = plain fine-tuning baseline); runs (seeds; each run trains its own teachers and
student with seed + run, the paper reports 10); model (the student's checkpoint) and
text_model (the text teacher's), '' = the protocol's default (clean: the offline `minilm`;
paper: `bert-base-uncased` and the SPEC's best text teacher); protocol; smoke (tiny everything).

The student runs each teacher stage whose results are missing, in `<workdir>/teachers/` (or
`--config.teacher_workdir`); teacher settings are under `teacher_text`, `teacher_emotion` and
`teacher_audio` (e.g. `--config.teacher_text.train.epochs=2`). Their data blocks are replaced
by this config's split settings, so every model sees the same examples in the same split.
"""

import ml_collections

from configs import common
from mh3.train import optim

ARGS = dict(
    dataset="demo",
    teachers="text+emotion+audio",
    runs=1,
    model="",
    text_model="",
    protocol="clean",
    smoke=False,
)
KINDS = ("text", "emotion", "audio")

# The paper's text-teacher checkpoints (SPEC stage 3) for protocol=paper.
PAPER_TEXT_TEACHER = {
    "sdcnl": "bert-base-uncased",
    "idendep": "bert-base-uncased",
    "deptweet": "mental/mental-bert-base-uncased",
    "twitsuicide": "bert-base-uncased",
}
PAPER_AUDIO_TEACHER = "MIT/ast-finetuned-audioset-10-10-0.4593"


def teacher_kinds(teachers: str) -> tuple[str, ...]:
    """'text+audio' -> ('text', 'audio'); 'none' or '' -> ()."""
    from mh3.errors import UserError

    if teachers in ("", "none"):
        return ()
    kinds = tuple(teachers.split("+"))
    unknown = [k for k in kinds if k not in KINDS]
    if unknown or len(set(kinds)) != len(kinds):
        raise UserError(
            f"configs/student.py: teachers={teachers!r}; use a '+'-joined subset of {KINDS}, "
            "or none"
        )
    return kinds


def get_config(arg=None):
    args = common.parse_args(arg, ARGS, __file__)
    paper = args.protocol == "paper"
    kinds = teacher_kinds(args.teachers)
    config = common.base("student", args)
    config.data = common.data_config(args.dataset, args.protocol, args.smoke)
    student_model = args.model or ("bert-base-uncased" if paper else "minilm")
    config.data.tokenizer = student_model

    config.teachers = "+".join(kinds) or "none"
    config.runs = args.runs
    config.teacher_workdir = ""  # '' = <workdir>/teachers
    config.predict_batch_size = 8 if args.smoke else 64  # teachers' soft-label pass

    config.model = ml_collections.ConfigDict()
    config.model.name = student_model
    # Overrides of the pretrained student; 0 / "" / -1.0 keep the checkpoint's value.
    config.model.num_hidden_layers = 0
    config.model.num_attention_heads = 0
    config.model.hidden_act = ""
    config.model.hidden_dropout_prob = -1.0
    config.model.compute_dtype = "float32"

    config.kd = ml_collections.ConfigDict()
    config.kd.ce_weight = 1.0
    config.kd.kd_weight = 1.0
    config.kd.temperature = 1.0
    # paper: torch KLDivLoss() default, the batch-mean KL divided by the number of classes.
    config.kd.reduction = "paper" if paper else "batchmean"
    config.kd.teacher_weights = ()  # one per teacher in `teachers` order; () = equal

    config.optim = optim.default_config()
    config.train = ml_collections.ConfigDict()
    # The demo has 216 training posts (7 steps an epoch): 3 epochs would barely move MiniLM.
    config.train.epochs = 10 if args.dataset == "demo" else 3
    config.train.num_steps = 0
    config.train.model_choice = "last" if paper else "best_val"
    config.train.select_metric = "loss" if paper else "f1_weighted"
    config.train.early_stop_patience = 0
    config.train.checkpoint_every_steps = 200
    config.train.max_to_keep = 2
    config.train.log_every_steps = 10
    config.train.prng_impl = "rbg"
    if paper:
        # SPEC: best T+E+A student on SDCNL (the only student row the paper gives).
        config.model.update(
            num_hidden_layers=12, num_attention_heads=12, hidden_act="gelu",
            hidden_dropout_prob=0.05,
        )  # fmt: skip
        config.optim.update(name="adam_l2", learning_rate=5e-5, weight_decay=0.01)
    else:
        config.optim.update(
            name="adamw", learning_rate=8e-5, weight_decay=0.01, schedule="warmup_linear",
            warmup_ratio=0.1, clip_norm=1.0,
        )  # fmt: skip

    sub_args = f"dataset={args.dataset},protocol={args.protocol}" + (",smoke" if args.smoke else "")
    if "text" in kinds:
        from configs import teacher_text

        text_model = args.text_model or (
            PAPER_TEXT_TEACHER.get(args.dataset, "bert-base-uncased") if paper else "minilm"
        )
        config.teacher_text = teacher_text.get_config(f"{sub_args},model={text_model}")
    if "emotion" in kinds:
        from configs import teacher_emotion

        config.teacher_emotion = teacher_emotion.get_config(sub_args)
    if "audio" in kinds:
        from configs import teacher_audio

        config.teacher_audio = teacher_audio.get_config(
            sub_args + (f",model={PAPER_AUDIO_TEACHER}" if paper else "")
        )

    if args.smoke:
        config.model.num_hidden_layers = 1
        config.train.update(epochs=1, num_steps=3, log_every_steps=1, checkpoint_every_steps=2)
        config.optim.warmup_steps = 1
        config.data.batch_size = config.data.eval_batch_size = 8
    return config
