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

    common.text_finetune(config, student_model, args.dataset)

    config.kd = ml_collections.ConfigDict()
    config.kd.ce_weight = 1.0
    config.kd.kd_weight = 1.0
    config.kd.temperature = 1.0
    # paper: torch KLDivLoss() default, the batch-mean KL divided by the number of classes.
    config.kd.reduction = "paper" if paper else "batchmean"
    config.kd.teacher_weights = ()  # one per teacher in `teachers` order; () = equal

    if paper:
        # SPEC: best T+E+A student on SDCNL (the only student row the paper gives).
        config.model.update(
            num_hidden_layers=12, num_attention_heads=12, hidden_act="gelu",
            hidden_dropout_prob=0.05,
        )  # fmt: skip
        config.optim = optim.default_config()  # the notebooks' plain Adam, no schedule or clipping
        config.optim.update(name="adam_l2", learning_rate=5e-5, weight_decay=0.01)
        config.train.update(model_choice="last", select_metric="loss")

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
        common.text_finetune_smoke(config)
    return config
