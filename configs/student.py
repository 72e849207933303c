"""The 3M-Health student: a text-only BERT distilled from the chosen teachers (SPEC stage 4).

    python launch.py --config=configs/student.py            # the whole pipeline, offline demo
    python launch.py --config=configs/student.py:dataset=dreaddit,teachers=text+emotion+audio,runs=3 \
        --config.data.path=../shared/data/dreaddit
    python launch.py --config=configs/student.py:dataset=sdcnl,protocol=paper,runs=10 \
        --config.data.path=DIR          # the paper's checkpoints: needs a model hub and a GPU

Arguments: dataset (registry name); teachers (`+`-joined subset of text, emotion, audio;
`none` = plain fine-tuning baseline); runs (students with seeds seed + run, against the same
teachers trained once; default 10 with protocol=paper, else 1;
`--config.retrain_teachers=true` retrains the teachers per run); model (the student's checkpoint) and
text_model (the text teacher's), '' = the protocol's default (clean: the offline `minilm`;
paper: `bert-base-uncased` and the SPEC's best text teacher); protocol (paper: the student row
of supplement Table A3 for the dataset and teacher combination, `TABLE_A3`); smoke.

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
    runs=0,
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

# SPEC addendum, supplement Table A3: the paper's student per dataset and teacher combination,
# (dropout, lr, weight decay, layers, heads, activation, epochs).
TABLE_A3 = {
    "twitsuicide": {
        "text+emotion+audio": (0.05, 1e-4, 0.0, 10, 3, "gelu", 3),
        "text+emotion": (0.1, 1e-4, 0.01, 10, 12, "gelu", 4),
        "text+audio": (0.05, 1e-4, 0.0, 12, 4, "gelu", 4),
        "text": (0.1, 1e-4, 0.0, 12, 8, "relu", 3),
    },
    "deptweet": {
        "text+emotion+audio": (0.01, 3e-5, 0.0, 6, 12, "gelu", 5),
        "text+emotion": (0.01, 3e-5, 0.0, 10, 12, "gelu", 5),
        "text+audio": (0.05, 1e-4, 0.0, 4, 8, "relu", 3),
        "text": (0.01, 4e-5, 0.0, 12, 6, "gelu", 4),
    },
    "idendep": {
        "text+emotion+audio": (0.1, 5e-5, 0.0, 10, 8, "gelu", 3),
        "text+emotion": (0.1, 5e-5, 0.0, 10, 6, "gelu", 3),
        "text+audio": (0.05, 4e-5, 0.0, 12, 12, "gelu", 4),
        "text": (0.05, 1e-4, 0.0, 4, 4, "gelu", 5),
    },
    "sdcnl": {
        "text+emotion+audio": (0.05, 5e-5, 0.01, 12, 12, "gelu", 3),
        "text+emotion": (0.05, 4e-5, 0.0, 12, 3, "gelu", 5),
        "text+audio": (0.05, 5e-5, 0.0, 12, 12, "gelu", 5),
        "text": (0.05, 4e-5, 0.0, 10, 12, "relu", 4),
    },
}


def paper_student_row(dataset: str, kinds: tuple[str, ...]) -> tuple:
    """Table A3's row for a dataset and teacher combination. Combinations the paper did not
    run (no text teacher, or none) take the dataset's T+E+A row; datasets outside the paper
    take SDCNL's rows."""
    rows = TABLE_A3.get(dataset, TABLE_A3["sdcnl"])
    key = "+".join(k for k in KINDS if k in kinds)
    return rows.get(key, rows["text+emotion+audio"])


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
    # SPEC: the paper repeats the student 10 times; the offline demo once (0 = that default).
    config.runs = args.runs or (10 if paper else 1)
    # False: teachers trained once and shared by every run (the paper); True: retrained per
    # run with seed + run, so the spread includes teacher variance.
    config.retrain_teachers = False
    # The std over runs: ddof 0 (population) as the notebooks' np.std, 1 (sample) in clean.
    config.std_ddof = 0 if paper else 1
    config.teacher_workdir = ""  # '' = <workdir>/teachers
    # The audio teacher's speech, when still to be made, starts at once in a child process at
    # idle CPU priority and takes what the text and emotion teachers leave of the cores
    # (mh3.stages.tts.Background); the audio teacher then makes whatever is left itself.
    config.speech_in_background = True
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
        dropout, lr, wd, layers, heads, act, epochs = paper_student_row(args.dataset, kinds)
        config.model.update(
            num_hidden_layers=layers, num_attention_heads=heads, hidden_act=act,
            hidden_dropout_prob=dropout,
        )  # fmt: skip
        config.optim = optim.default_config()  # the notebooks' plain Adam, no schedule or clipping
        config.optim.update(name="adam_l2", learning_rate=lr, weight_decay=wd)
        config.train.update(epochs=epochs, model_choice="last", select_metric="loss")
        config.data.batch_size = config.data.eval_batch_size = 32

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
