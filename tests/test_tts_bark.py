"""Bark through the tts stage: a tiny randomly initialised BarkModel saved to a folder.

The real suno/bark weights cannot be downloaded here; a random model of the same architecture
exercises every step of the real path (processor, voice preset, three generators, EnCodec) and
makes real, meaningless 24 kHz audio.
"""

import json
import os

import librosa
import numpy as np
import pytest
import soundfile

torch = pytest.importorskip("torch")

from configs import tts as tts_config  # noqa: E402
from mh3 import stages  # noqa: E402
from mh3.audio import bark  # noqa: E402
from mh3.weights.hub import resolve_checkpoint  # noqa: E402

PRESET = "v2/en_speaker_6"


def _write_tiny_bark(folder: str) -> None:
    from transformers import AutoTokenizer, BarkConfig, BarkModel, BarkProcessor
    from transformers.models.bark.generation_configuration_bark import BarkGenerationConfig

    torch.manual_seed(0)
    block = dict(num_layers=2, num_heads=2, hidden_size=16, block_size=1024)
    # Vocabulary sizes are Bark's own: the generation constants (text offset 10,048, coarse
    # tokens from 10,000, 8 codebooks of 1,024) index into them.
    config = BarkConfig(
        semantic_config=dict(input_vocab_size=129600, output_vocab_size=10048, **block),
        coarse_acoustics_config=dict(input_vocab_size=12096, output_vocab_size=12096, **block),
        fine_acoustics_config=dict(
            input_vocab_size=1056, output_vocab_size=1056, n_codes_total=8, n_codes_given=1, **block
        ),
        codec_config=dict(hidden_size=16, num_filters=4, num_lstm_layers=1, codebook_dim=16),
    )
    model = BarkModel(config)
    # EnCodec's codebooks are buffers left at zero by the initialiser, which would make the
    # audio ignore the generated codes; give them random entries like a trained codec has.
    for layer in model.codec_model.quantizer.layers:
        layer.codebook.embed.normal_()
    model.save_pretrained(folder)
    # BarkGenerationConfig cannot save itself in this transformers version; its dict can.
    with open(os.path.join(folder, "generation_config.json"), "w") as f:
        json.dump(BarkGenerationConfig().to_dict(), f)
    # Bark's processor is a BERT tokenizer; MiniLM's (real, offline) stands in for it.
    tokenizer = AutoTokenizer.from_pretrained(resolve_checkpoint("minilm"))
    BarkProcessor(tokenizer).save_pretrained(folder)
    # A voice preset laid out like the hub's speaker_embeddings/ folder.
    rng = np.random.default_rng(0)
    prompts = {
        "semantic_prompt": rng.integers(0, 10000, size=40),
        "coarse_prompt": rng.integers(0, 1024, size=(2, 60)),
        "fine_prompt": rng.integers(0, 1024, size=(8, 60)),
    }
    os.makedirs(os.path.join(folder, "speaker_embeddings", "v2"))
    index = {"repo_or_path": folder, PRESET: {}}
    for key, value in prompts.items():
        rel = f"speaker_embeddings/{PRESET}_{key}.npy"
        np.save(os.path.join(folder, rel), value)
        index[PRESET][key] = rel
    with open(os.path.join(folder, "speaker_embeddings_path.json"), "w") as f:
        json.dump(index, f)


@pytest.fixture(scope="module")
def tiny_bark(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("tiny-bark"))
    _write_tiny_bark(folder)
    return folder


def _backend(folder, **kwargs):
    return bark.BarkBackend(folder, semantic_max_new_tokens=8, **kwargs)


def test_bark_speak_is_seeded(tiny_bark):
    voice = _backend(tiny_bark)
    assert voice.sample_rate == 24000
    a, b, c = (voice.speak("hello there", seed) for seed in (1, 1, 2))
    assert a.dtype == np.float32 and a.ndim == 1 and len(a) > 0 and np.abs(a).max() > 0
    np.testing.assert_array_equal(a, b)
    assert len(a) != len(c) or not np.array_equal(a, c)


def test_bark_voice_preset_errors(tiny_bark, tmp_path):
    from mh3.errors import UserError

    with pytest.raises(UserError, match="v2/en_speaker_9"):
        _backend(tiny_bark, voice_preset="v2/en_speaker_9")
    # A .npz preset file works too.
    npz = str(tmp_path / "voice.npz")
    rng = np.random.default_rng(1)
    np.savez(
        npz,
        semantic_prompt=rng.integers(0, 10000, size=20),
        coarse_prompt=rng.integers(0, 1024, size=(2, 30)),
        fine_prompt=rng.integers(0, 1024, size=(8, 30)),
    )
    assert len(_backend(tiny_bark, voice_preset=npz).speak("hi", 0)) > 0


def test_tts_stage_with_tiny_bark(tiny_bark, tmp_path):
    config = tts_config.get_config("dataset=demo,smoke,backend=bark")
    config.tts.model = tiny_bark
    config.tts.semantic_max_new_tokens = 8
    config.tts.max_examples = 1
    workdir = str(tmp_path / "run")
    results = stages.run_stage(config, workdir)
    assert results["backend"] == "bark" and results["sample_rate"] == 24000
    assert results["files"] == 1 and results["made"] == 1 and results["real_time_factor"] > 0
    saved = json.load(open(os.path.join(workdir, "results.json")))
    assert saved["real_time_factor"] == results["real_time_factor"]
    manifest = json.load(open(results["manifest"]))
    for entry in manifest:
        path = os.path.join(results["wav_dir"], entry["path"])
        audio, sr = soundfile.read(path)
        assert sr == 24000 and entry["duration"] == pytest.approx(len(audio) / 24000)
        assert np.all(audio[-6000:] == 0)  # 0.25 s at 24 kHz after the last piece
        audio16, _ = librosa.load(path, sr=16000)
        assert len(audio16) / 16000 == pytest.approx(entry["duration"], abs=1e-3)
    # Same config again: the stage is done and is not rerun.
    assert stages.run_stage(config, workdir)["made"] == 1
