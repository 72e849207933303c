"""fbank parity with HF ASTFeatureExtractor on real synthesized speech, normalisation, caching."""

import os

import numpy as np
import pytest
import soundfile

from mh3.audio import features
from mh3.errors import UserError


@pytest.fixture(scope="module")
def speech_wav(tmp_path_factory):
    """A real spoken sentence from the offline piper voice, written at its native 22,050 Hz."""
    pytest.importorskip("piper")
    from mh3.audio import piper, tts

    backend = piper.PiperBackend()
    audio = tts.synthesize(
        "I have been so stressed about work lately. My boss wants more!", backend
    )
    path = str(tmp_path_factory.mktemp("speech") / "speech.wav")
    soundfile.write(path, audio, backend.sample_rate, subtype="PCM_16")
    return path


def test_load_audio_resamples_to_16k_mono(speech_wav, tmp_path):
    native, sr = soundfile.read(speech_wav)
    audio = features.load_audio(speech_wav)
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert abs(len(audio) / 16000 - len(native) / sr) < 1e-3
    # A stereo file comes back mono (mean of the channels).
    stereo = str(tmp_path / "stereo.wav")
    soundfile.write(stereo, np.stack([native, native], axis=1), sr)
    np.testing.assert_allclose(features.load_audio(stereo), audio, atol=1e-4)


def test_load_audio_errors_name_the_file(tmp_path):
    with pytest.raises(UserError, match="missing.wav"):
        features.load_audio(str(tmp_path / "missing.wav"))
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF not really a wav file")
    with pytest.raises(UserError, match="bad.wav"):
        features.load_audio(str(bad))


@pytest.mark.parametrize("max_length", [None, 100, 1024])
def test_fbank_matches_ast_feature_extractor(speech_wav, max_length):
    from transformers import ASTFeatureExtractor

    audio = features.load_audio(speech_wav)
    ours = features.fbank(audio, max_length=max_length)
    extractor = ASTFeatureExtractor(do_normalize=False, max_length=max_length or 100_000)
    ref = extractor(audio, sampling_rate=16000, return_tensors="np")["input_values"][0]
    if max_length is None:
        # Without max_length we do not pad: compare the real frames, the rest of ref is padding.
        assert ours.shape == (1 + (len(audio) - 400) // 160, 128)
        assert np.all(ref[len(ours) :] == 0)
        ref = ref[: len(ours)]
    assert ours.shape == ref.shape and ours.dtype == np.float32
    max_abs = float(np.abs(ours - ref).max())
    print(f"fbank vs ASTFeatureExtractor (max_length={max_length}): max abs diff {max_abs:.3g}")
    assert max_abs <= 1e-4
    # Real speech spans a wide range of log energies: the features are not trivially flat.
    assert ours[:50].std() > 1.0


def test_fbank_equals_the_per_frame_loop_of_transformers_bitwise(speech_wav):
    """The vectorised frames give exactly the values of `audio_utils.spectrogram`'s loop, so
    feature caches written before the change stay valid."""
    from transformers import audio_utils

    audio = features.load_audio(speech_wav)
    ref = audio_utils.spectrogram(
        audio, features._window(), frame_length=400, hop_length=160, fft_length=512,
        power=2.0, center=False, preemphasis=0.97, mel_filters=features._mel_filters(128, 16000),
        log_mel="log", mel_floor=features.MEL_FLOOR, remove_dc_offset=True,
    ).T.astype(np.float32)  # fmt: skip
    ours = features.fbank(audio)
    assert ours.shape == ref.shape and np.array_equal(ours, ref)


def test_fbank_kaldi_settings_on_a_tone():
    sr = 16000
    t = np.arange(sr) / sr
    tone = 0.5 * np.sin(2 * np.pi * 1000 * t).astype(np.float32)
    feats = features.fbank(tone, num_mel_bins=128)
    assert feats.shape == (98, 128)  # 1 + (16000 - 400) // 160, no edge padding
    # Kaldi mel scale from 20 Hz to 8 kHz: the bin whose centre is nearest 1 kHz is loudest.
    mel = lambda f: 1127.0 * np.log(1 + f / 700.0)  # noqa: E731
    centres = mel(20) + (np.arange(128) + 1) * (mel(8000) - mel(20)) / 129
    assert abs(int(np.argmax(feats.mean(0))) - int(np.argmin(abs(centres - mel(1000))))) <= 1
    # Cut and padded to max_length with zeros.
    short = features.fbank(tone[:4000], max_length=50)
    assert short.shape == (50, 128)  # 1 + (4000 - 400) // 160 = 23 real frames
    assert np.all(short[23:] == 0) and np.all(short[:23] != 0)
    assert features.fbank(tone[:300], max_length=5).shape == (5, 128)
    np.testing.assert_array_equal(features.fbank(tone, max_length=10), feats[:10])


def test_normalisation_stats_roundtrip(tmp_path):
    rng = np.random.default_rng(0)
    examples = [rng.normal(-4.0, 3.0, size=(n, 8)) for n in (10, 30, 60)]
    stats = features.compute_stats(examples)
    pooled = np.concatenate([e.ravel() for e in examples])
    assert stats["count"] == pooled.size
    np.testing.assert_allclose(
        [stats["mean"], stats["std"]], [pooled.mean(), pooled.std()], rtol=1e-9
    )
    path = str(tmp_path / "stats.json")
    features.save_stats(path, stats)
    loaded = features.load_stats(path)
    normed = features.normalize(examples[0], loaded)
    np.testing.assert_allclose(
        normed, (examples[0] - pooled.mean()) / (2 * pooled.std()), rtol=1e-5
    )
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(UserError, match="bad.json"):
        features.load_stats(str(tmp_path / "bad.json"))


def test_feature_cache_reuses_and_invalidates(speech_wav, tmp_path):
    cache = str(tmp_path / "cache")
    first = features.cached_fbank(speech_wav, cache, max_length=64)
    (cached,) = os.listdir(cache)
    np.testing.assert_array_equal(np.load(os.path.join(cache, cached)), first)
    # A second call reads the file: prove it by planting different values under the same key.
    np.save(os.path.join(cache, cached), np.zeros_like(first))
    assert np.all(features.cached_fbank(speech_wav, cache, max_length=64) == 0)
    # Other settings get their own entry.
    assert features.cached_fbank(speech_wav, cache, max_length=32).shape == (32, 128)
    assert len(os.listdir(cache)) == 2
    # A corrupt cache file is recomputed.
    with open(os.path.join(cache, cached), "wb") as f:
        f.write(b"garbage")
    np.testing.assert_array_equal(features.cached_fbank(speech_wav, cache, max_length=64), first)
    stacked = features.features_for([speech_wav, speech_wav], cache, max_length=64, progress=False)
    assert stacked.shape == (2, 64, 128)
    np.testing.assert_array_equal(stacked[1], first)
