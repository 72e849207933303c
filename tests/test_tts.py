"""Text to speech: real piper wavs, a tiny random Bark, resuming after an interrupted run."""

import json
import logging
import os

import librosa
import numpy as np
import pytest
import soundfile

from mh3.audio import piper, tts

pytest.importorskip("piper")


@pytest.fixture(scope="module")
def joe():
    """Piper's bundled voice 'joe', seeded."""
    return piper.PiperBackend()


def test_piper_wav_reads_back_at_16k_with_expected_duration(joe, tmp_path):
    text = "i can't sleep. my exams are next week and i feel sick about it."
    out = tmp_path / "wavs"
    result = tts.write_wavs([(7, text)], str(out), joe, progress=False)
    path = out / "Sample_7.wav"
    (entry,) = json.loads((out / "manifest.json").read_text())
    assert entry["id"] == 7 and entry["path"] == "Sample_7.wav" and entry["backend"] == "piper"
    assert entry["text_hash"] == tts.text_hash(text)
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~umask  # not the temp file's 0600
    assert entry["synth_seconds"] > 0
    native, sr = soundfile.read(path)
    assert sr == 22050 and native.ndim == 1
    assert entry["duration"] == pytest.approx(len(native) / sr)
    # Two sentences at a normal speaking rate plus two 0.25 s pauses: a few seconds.
    assert 2.0 < entry["duration"] < 10.0
    pause = int(0.25 * sr)
    assert np.all(native[-pause:] == 0)  # the pause after the last piece
    assert np.abs(native[:-pause]).max() > 0.1  # speech, not silence
    audio16, sr16 = librosa.load(path, sr=16000, mono=True)
    assert sr16 == 16000
    assert len(audio16) / 16000 == pytest.approx(entry["duration"], abs=1e-3)
    assert result["made"] == 1 and result["real_time_factor"] > 0


class _Recording:
    """The real piper voice, remembering what it was asked to say and what it returned."""

    def __init__(self, backend):
        self.name, self.sample_rate = backend.name, backend.sample_rate
        self._backend, self.calls = backend, []

    def speak(self, text, seed):
        audio = self._backend.speak(text, seed)
        self.calls.append((text, audio))
        return audio


def test_pieces_are_spoken_separately_with_pauses(joe):
    voice = _Recording(joe)
    # 91 words without punctuation: pieces of 45, 45 and 1 words.
    audio = tts.synthesize(" ".join(["hello"] * 91), voice)
    assert [len(text.split()) for text, _ in voice.calls] == [45, 45, 1]
    pause = np.zeros(int(0.25 * joe.sample_rate), np.float32)
    expected = np.concatenate([part for _, a in voice.calls for part in (a, pause)])
    np.testing.assert_array_equal(audio, expected)


def test_empty_text_gives_silence_and_a_warning(joe, tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        result = tts.write_wavs([(0, "   ")], str(tmp_path), joe, progress=False)
    assert result["empty"] == 1
    assert any("empty text" in r.getMessage() for r in caplog.records)
    audio, sr = soundfile.read(tmp_path / "Sample_0.wav")
    assert len(audio) == int(0.25 * sr) and np.all(audio == 0)


class _Interrupting:
    """The real piper voice, interrupted (like Ctrl-C) on its n-th piece."""

    def __init__(self, backend, after):
        self.name, self.sample_rate = backend.name, backend.sample_rate
        self._backend, self._left = backend, after

    def speak(self, text, seed):
        self._left -= 1
        if self._left < 0:
            raise KeyboardInterrupt
        return self._backend.speak(text, seed)


def test_rerun_after_interruption_and_corruption_completes(joe, tmp_path):
    items = [(i, f"this is post number {i}. it has two sentences.") for i in range(6)]
    out = str(tmp_path / "wavs")
    with pytest.raises(KeyboardInterrupt):
        tts.write_wavs(items, out, _Interrupting(joe, after=5), progress=False)
    made = sorted(f for f in os.listdir(out) if f.endswith(".wav"))
    assert made == ["Sample_0.wav", "Sample_1.wav"]  # two pieces per post: killed in post 2
    assert not os.path.exists(os.path.join(out, tts.MANIFEST))
    # Damage what the killed run left: a cut-short file, garbage, a stray temporary file.
    with open(os.path.join(out, "Sample_0.wav"), "r+b") as f:
        f.truncate(os.path.getsize(f.name) // 2)
    with open(os.path.join(out, "Sample_3.wav"), "wb") as f:
        f.write(b"RIFF\x00\x00garbage")
    with open(os.path.join(out, ".tmp-abc.wav"), "wb") as f:
        f.write(b"half a file")
    before = os.path.getmtime(os.path.join(out, "Sample_1.wav"))

    result = tts.write_wavs(items, out, joe, progress=False)
    assert (result["made"], result["skipped"], result["files"]) == (5, 1, 6)
    assert os.path.getmtime(os.path.join(out, "Sample_1.wav")) == before  # kept, not remade
    assert not os.path.exists(os.path.join(out, ".tmp-abc.wav"))
    manifest = json.loads(open(os.path.join(out, tts.MANIFEST)).read())
    assert [e["id"] for e in manifest] == list(range(6))
    for entry in manifest:
        audio, sr = soundfile.read(os.path.join(out, entry["path"]))
        assert len(audio) == entry["frames"] and sr == 22050
    # A third run has nothing to do; a changed text is spoken again.
    assert tts.write_wavs(items, out, joe, progress=False)["made"] == 0
    items[2] = (2, "a different text now.")
    assert tts.write_wavs(items, out, joe, progress=False)["made"] == 1


def test_piece_seeds_are_stable_and_distinct():
    assert tts.piece_seed(0, 5, 1) == tts.piece_seed(0, 5, 1)
    assert len({tts.piece_seed(s, i, k) for s in (0, 1) for i in (0, 1) for k in (0, 1)}) == 8


def test_paper_selects_bark_and_missing_bark_is_one_line_naming_piper(tmp_path):
    """protocol=paper picks Bark (the paper's voice) for the tts stage and the audio teacher's
    tts; without Bark's weights (no hub here) the run ends with one line that names piper."""
    from configs import teacher_audio
    from configs import tts as tts_config
    from mh3.audio import tts as tts_lib
    from mh3.errors import UserError

    assert tts_config.get_config("protocol=paper").tts.backend == "bark"
    assert tts_config.get_config("").tts.backend == "piper"
    assert tts_config.get_config("protocol=paper,backend=piper").tts.backend == "piper"
    assert teacher_audio.get_config("protocol=paper").tts.tts.backend == "bark"
    assert teacher_audio.get_config("").tts.tts.backend == "piper"
    config = tts_config.get_config("protocol=paper").tts
    for model in (str(tmp_path / "no-bark"), "suno/bark"):
        config.model = model
        with pytest.raises(UserError) as e:
            tts_lib.make_backend(config)
        line = str(e.value)
        assert "\n" not in line and "Bark" in line and model in line
        assert "--config.tts.backend=piper" in line


def test_piper_is_seeded_same_bytes_again_other_seed_other_audio(joe):
    """Issue #16 item 7: the same text and seed give byte-identical audio, whatever was spoken
    in between; another seed gives other audio (the voice keeps its default noise)."""
    text = "my exams are next week. i feel sick about it."
    first = joe.speak(text, seed=11)
    joe.speak("something else in between, to move any hidden random state.", seed=3)
    assert first.tobytes() == joe.speak(text, seed=11).tobytes()
    other = joe.speak(text, seed=12)
    assert first.shape != other.shape or not np.array_equal(first, other)


def test_noise_too_short_is_retried_with_the_same_values(joe, monkeypatch):
    text = "a sentence long enough to need more noise frames than the first guess."
    expected = joe.speak(text, seed=5)
    monkeypatch.setattr(joe, "frames_per_id", 0)  # first guess: 32 frames, far too few
    assert joe.speak(text, seed=5).tobytes() == expected.tobytes()


def test_parallel_writer_equals_serial_bytewise_and_resumes_after_a_kill(
    joe, tmp_path, monkeypatch
):
    """Issue #14 item 3: two worker processes write the same files as one, and a run stopped
    half way (here: Ctrl-C while writing its second file) resumes with workers."""
    import multiprocessing

    from mh3 import files

    monkeypatch.setattr(tts, "CHARS_PER_WORKER", 1)  # real runs give a worker minutes of text
    items = [(i, f"post {i} is short. it still has two sentences.") for i in range(4)]
    serial, parallel = tmp_path / "serial", tmp_path / "parallel"
    assert tts.write_wavs(items, str(serial), joe, workers=1, progress=False)["workers"] == 1

    real_write, calls = files.atomic_write, []

    def interrupted(path, write):
        calls.append(path)
        if len(calls) == 2:
            raise KeyboardInterrupt
        real_write(path, write)

    monkeypatch.setattr(files, "atomic_write", interrupted)
    with pytest.raises(KeyboardInterrupt):
        tts.write_wavs(items, str(parallel), joe, workers=2, progress=False)
    monkeypatch.setattr(files, "atomic_write", real_write)
    assert not multiprocessing.active_children()  # the workers stopped with the run
    assert sorted(f for f in os.listdir(parallel) if f.endswith(".wav")) == ["Sample_0.wav"]

    result = tts.write_wavs(items, str(parallel), joe, workers=2, progress=False)
    assert (result["made"], result["skipped"], result["workers"]) == (3, 1, 2)
    for i, _ in items:
        name = tts.wav_name(i)
        assert (parallel / name).read_bytes() == (serial / name).read_bytes(), name
    drop = {"synth_seconds"}
    manifests = [json.loads((d / tts.MANIFEST).read_text()) for d in (serial, parallel)]
    assert [{k: v for k, v in e.items() if k not in drop} for e in manifests[0]] == [
        {k: v for k, v in e.items() if k not in drop} for e in manifests[1]
    ]


def test_little_text_is_spoken_in_process(joe, tmp_path):
    items = [(i, f"post {i}.") for i in range(6)]  # far less than CHARS_PER_WORKER
    assert tts.write_wavs(items, str(tmp_path), joe, workers=4, progress=False)["workers"] == 1


def test_workers_setting():
    from configs import teacher_audio
    from configs import tts as tts_config
    from mh3.errors import UserError

    assert tts_config.get_config("").tts.workers == 0
    assert teacher_audio.get_config("").tts.tts.workers == 0
    assert tts.resolve_workers(3) == 3 and tts.resolve_workers(0) >= 1
    with pytest.raises(UserError, match="tts.workers=-1"):
        tts.resolve_workers(-1)


def test_background_stage_runs_at_idle_priority_and_makes_the_same_files(tmp_path):
    """The student's background speech (mh3.stages.tts.Background): the tts stage in a child
    process at idle CPU priority; the stage run afterwards in the foreground finds it done, and
    the files are byte for byte those of a foreground run. Stopped early, the child leaves the
    workdir to a foreground run that makes the rest."""
    import time

    from configs import tts as tts_config
    from mh3 import stages
    from mh3.stages import tts as tts_stage

    config = tts_config.get_config("smoke")
    with config.unlocked():
        config.tts.max_examples = 2  # the first 2 demo posts
    fg = tmp_path / "fg"
    stages.run_stage(config, str(fg))
    bg = tmp_path / "bg"
    background = tts_stage.Background(config, str(bg), force=False)
    policies = set()
    while background.running:
        try:
            policies.add(os.sched_getscheduler(background.pid))
        except OSError:  # ended between the two calls
            break
        time.sleep(0.02)
    assert background.wait() == 0
    assert os.SCHED_IDLE in policies  # set first thing in the child, kept to its end
    assert "tts: made 2 files" in (bg / "background.log").read_text()
    assert stages.is_done(config, str(bg))
    names = sorted(f for f in os.listdir(fg / "wavs") if f.endswith(".wav"))
    assert len(names) == 2
    for name in names:
        assert (bg / "wavs" / name).read_bytes() == (fg / "wavs" / name).read_bytes(), name

    stopped = tmp_path / "stopped"
    background = tts_stage.Background(config, str(stopped), force=False)
    background.stop()
    assert not background.running
    stages.run_stage(config, str(stopped))  # the lock is free; makes what the child did not
    for name in names:
        assert (stopped / "wavs" / name).read_bytes() == (fg / "wavs" / name).read_bytes(), name
