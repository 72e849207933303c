"""The audio-teacher stage end to end (tts -> fbank -> tiny AST -> recipe -> saved model) and
its saved model read back: by transformers, and by `mh3.load` on waveforms, wav files and a
dataset's examples. Then the stage's parts.

One smoke run (module fixture, through launch.py) trains the teacher all model tests read.
"""

import collections
import glob
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import mh3
from configs import teacher_audio
from mh3 import data
from mh3.audio import features as feats
from mh3.audio import teacher
from mh3.errors import UserError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N_PER_SPLIT = 4


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished smoke run: (workdir, results, dataset, wav paths in example-index order)."""
    workdir = tmp_path_factory.mktemp("audio")
    cmd = [
        sys.executable, "launch.py", "--config=configs/teacher_audio.py:smoke",
        f"--workdir={workdir}", f"--config.data.max_per_split={N_PER_SPLIT}",
    ]  # fmt: skip
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((workdir / "results.json").read_text())
    config = teacher_audio.get_config("smoke")
    config.data.max_per_split = N_PER_SPLIT
    ds = data.load_dataset(config.data)
    paths = [os.path.join(results["wav_dir"], f"Sample_{i}.wav") for i in range(len(ds.examples))]
    return workdir, results, ds, paths


def test_smoke_run_through_launch_saves_a_model_folder(trained):
    workdir, results, ds, paths = trained
    for split in ("val", "test"):
        assert {"accuracy", "f1_macro", "f1_weighted", "confusion_matrix"} <= set(results[split])
        assert results[split]["n"] == results["data"][split] == N_PER_SPLIT
    assert os.path.exists(results["test"]["predictions"])  # the recipe's per-example file
    assert results["random_init_model"] is True and results["synthetic_data"] is True
    assert results["data_fingerprint"] == ds.fingerprint and results["history"]
    # The stage pulled the tts stage into <workdir>/tts: one wav per example.
    assert results["wav_dir"] == str(workdir / "tts" / "wavs")
    assert results["tts_workdir"] == str(workdir / "tts")
    assert len([f for f in os.listdir(results["wav_dir"]) if f.endswith(".wav")]) == 12
    # One format: model/ (HF folder + mh3.json), no params/ export.
    model_dir = results["model"]
    assert model_dir == str(workdir / "model") and "params" not in results
    assert not os.path.exists(workdir / "params")
    assert {"config.json", "model.safetensors", "mh3.json"} <= set(os.listdir(model_dir))

    meta = json.loads((workdir / "model" / "mh3.json").read_text())
    assert meta["kind"] == "audio" and meta["protocol"] == "clean"
    assert meta["classes"] == results["data"]["classes"] == list(ds.classes)
    assert meta["data_fingerprint"] == ds.fingerprint
    audio = meta["audio"]
    assert (audio["sample_rate"], audio["max_length"], audio["num_mel_bins"]) == (16000, 128, 128)
    assert audio["fbank"] == teacher.FBANK and audio["stats_splits"] == ["train"]
    assert meta["feature_cache"] == str(workdir / "features")
    # The dataset-level fbank cache lies beside the shared wavs, for every later run.
    assert len(glob.glob(os.path.join(results["wav_dir"], "fbank-*.npy"))) == 1
    # clean protocol: statistics from the train audio only (the first N_PER_SPLIT examples).
    stats = feats.compute_stats(
        [feats.fbank(feats.load_audio(p), max_length=128) for p in paths[:N_PER_SPLIT]]
    )
    for key in ("mean", "std"):
        assert audio[key] == pytest.approx(stats[key], rel=1e-6) == results["stats"][key]

    # clean protocol: the random checkpoint's 1,024-frame table resampled to 12 x 12 patches
    # (a zero table, the paper's rule, would still be ~0 after two small steps).
    predictor = mh3.load(model_dir)
    assert (
        isinstance(predictor, teacher.AudioPredictor) and predictor.model.config.hidden_size == 32
    )
    pos = predictor.params["embeddings"]["position_embeddings"]
    assert pos.shape == (1, 12 * 12 + 2, 32) and float(np.abs(pos).max()) > 0.01
    # The saved model gives the recipe's test metrics back.
    logits = predictor.logits_examples(ds.examples, results["wav_dir"])
    test = [e for e in ds.examples if e.split == "test"]
    predicted = logits[[e.index for e in test]].argmax(-1)
    accuracy = float(np.mean(predicted == [e.label for e in test]))
    assert accuracy == pytest.approx(results["test"]["accuracy"])


def test_transformers_reads_the_saved_model_with_the_recorded_preprocessing(trained):
    """HF alone (ASTForAudioClassification + ASTFeatureExtractor set from mh3.json) gives the
    probabilities `mh3.load(dir).predict(wav paths)` gives."""
    import torch
    import transformers as hf

    _, results, ds, paths = trained
    model_dir = results["model"]
    torch_model, info = hf.ASTForAudioClassification.from_pretrained(
        model_dir, output_loading_info=True
    )
    assert not any(info.values()), info  # missing / unexpected / mismatched keys, errors
    assert [torch_model.config.id2label[i] for i in range(3)] == list(ds.classes)
    audio = json.loads(open(os.path.join(model_dir, "mh3.json")).read())["audio"]
    extractor = hf.ASTFeatureExtractor(
        sampling_rate=audio["sample_rate"], num_mel_bins=audio["num_mel_bins"],
        max_length=audio["max_length"], mean=audio["mean"], std=audio["std"], do_normalize=True,
    )  # fmt: skip
    waves = [feats.load_audio(p) for p in paths]  # mono, 16 kHz, as the pipeline reads them
    x = extractor(waves, sampling_rate=16000, return_tensors="np")["input_values"]
    ours_x = np.stack([feats.normalize(feats.fbank(w, max_length=128), audio) for w in waves])
    feature_diff = float(np.abs(x - ours_x).max())
    with torch.no_grad():
        theirs = torch.softmax(torch_model.eval()(torch.tensor(x)).logits, -1).numpy()
    ours = mh3.load(model_dir).predict(paths)
    assert ours.shape == (12, 3) and ours.dtype == np.float32
    diff = float(np.abs(ours - theirs).max())
    print(f"audio teacher: max abs diff vs transformers: features {feature_diff:.2e}, "
          f"probabilities {diff:.2e}")  # fmt: skip
    assert diff <= 1e-4
    assert feature_diff <= 1e-3  # mh3's features are HF's (test_audio_features measures it)


def test_predict_on_waveforms_equals_predict_on_wav_files(trained):
    import soundfile

    _, results, _, paths = trained
    # Piper speaks at 22,050 Hz: the paths go through the pipeline's resampling to 16 kHz.
    assert soundfile.info(paths[0]).samplerate != 16000
    predictor = mh3.load(results["model"])
    from_paths = predictor.predict(paths)
    from_waves = predictor.predict([feats.load_audio(p) for p in paths])
    np.testing.assert_array_equal(from_waves, from_paths)
    np.testing.assert_allclose(from_paths.sum(-1), 1.0, rtol=1e-6)
    # Row i is input i, whatever the batch it falls into (a batch of 4 over 4 devices here).
    predictor.batch_size = 4
    np.testing.assert_allclose(predictor.predict(paths[::-1]), from_paths[::-1], atol=1e-6)
    with pytest.raises(ValueError, match="list"):
        predictor.predict(feats.load_audio(paths[0]))  # one waveform, not a list of them
    assert predictor.logits([]).shape == (0, 3)


def test_logits_examples_rows_follow_the_example_index(trained, tmp_path, monkeypatch):
    from mh3.distill import teachers

    _, results, ds, paths = trained
    predictor = mh3.load(results["model"])
    expect = predictor.logits(paths)  # paths are in example-index order
    shuffled = [ds.examples[i] for i in np.random.RandomState(0).permutation(len(ds.examples))]
    assert [e.index for e in shuffled] != sorted(e.index for e in shuffled)
    cache = tmp_path / "cache"
    got = predictor.logits_examples(shuffled, results["wav_dir"], cache_dir=str(cache))
    np.testing.assert_allclose(got, expect, atol=1e-5)
    assert np.abs(expect - expect[::-1]).max() > 1e-4  # rows differ, so the order is checked
    # The training run's dataset-level cache beside the wavs served every example.
    assert not cache.exists()
    # Without it, the per-file cache: one fbank per wav.
    with monkeypatch.context() as m:
        m.setattr(feats, "read_shared", lambda *args, **kwargs: None)
        got = predictor.logits_examples(shuffled, results["wav_dir"], cache_dir=str(cache))
    np.testing.assert_allclose(got, expect, atol=1e-5)
    assert len(os.listdir(cache)) == 12
    # The student's soft labels: the same rows, through the stage's results.
    soft = teachers.teacher_logits(results, ds, batch_size=8)
    np.testing.assert_allclose(soft, expect, atol=1e-5)

    # Without cache_dir, the shared cache, then the per-file one recorded in mh3.json, serve
    # every example.
    def no_fbank(*args, **kwargs):
        raise AssertionError("fbank recomputed instead of read from the recorded cache")

    monkeypatch.setattr(feats, "fbank", no_fbank)
    cached = predictor.logits_examples(ds.examples, results["wav_dir"])
    np.testing.assert_allclose(cached, expect, atol=1e-5)
    monkeypatch.setattr(feats, "read_shared", lambda *args, **kwargs: None)
    cached = predictor.logits_examples(ds.examples, results["wav_dir"])
    np.testing.assert_allclose(cached, expect, atol=1e-5)
    with pytest.raises(ValueError, match="indices 0..N-1"):
        predictor.logits_examples(ds.examples[4:], results["wav_dir"])


def test_a_folder_that_is_not_a_saved_model_is_a_user_error(trained, tmp_path):
    _, results, _, _ = trained
    bare = tmp_path / "bare"
    shutil.copytree(results["model"], bare)
    os.remove(bare / "mh3.json")  # a plain HF folder
    with pytest.raises(UserError, match=f"{bare}: not an mh3 saved model"):
        mh3.load(str(bare))
    # A model whose features were made with other fbank settings is refused, not misread.
    other = tmp_path / "other"
    shutil.copytree(results["model"], other)
    meta = json.loads((other / "mh3.json").read_text())
    meta["audio"]["fbank"]["preemphasis"] = 0.9
    (other / "mh3.json").write_text(json.dumps(meta))
    with pytest.raises(UserError, match="other settings"):
        mh3.load(str(other))


def test_batches_cover_a_split_once_with_padding_rows_and_indices():
    x = np.arange(10, dtype=np.float32)[:, None, None] * np.ones((10, 3, 2), np.float32)
    labels = np.arange(10, dtype=np.int32) % 3
    indices = np.arange(100, 110, dtype=np.int32)
    rows = np.array([1, 4, 5, 7, 9])
    seen = []
    for p in range(2):  # two processes, global batch 4: each gets 2 rows of each batch
        for b in teacher.batches(
            x, labels, indices, 4, rows=rows, train=True, seed=1, epoch=3,
            process_index=p, process_count=2,
        ):  # fmt: skip
            assert b["input_values"].shape == (2, 3, 2)
            for r in range(2):
                if b["mask"][r]:
                    i = int(b["index"][r]) - 100
                    seen.append(i)
                    assert b["input_values"][r, 0, 0] == i and b["label"][r] == labels[i]
                else:
                    assert b["index"][r] == -1 and not b["input_values"][r].any()
    assert sorted(seen) == rows.tolist()
    evals = list(teacher.batches(x, labels, indices, 4, rows=rows, train=False))
    assert [int(i) for b in evals for i in b["index"]] == [101, 104, 105, 107, 109, -1, -1, -1]


def test_missing_or_foreign_wavs_are_user_errors_naming_the_file(tmp_path):
    import soundfile

    from mh3.audio import tts

    config = teacher_audio.get_config("smoke")
    config.data.max_per_split = 2
    ds = data.load_dataset(config.data)
    with pytest.raises(UserError, match="Sample_0.wav"):
        teacher.load_features(ds.examples, str(tmp_path), None, max_length=128, num_mel_bins=128)
    for e in ds.examples:
        soundfile.write(tmp_path / tts.wav_name(e.index), np.zeros(8000, np.float32), 16000)
    manifest = [{"id": e.index, "text_hash": tts.text_hash(e.text)} for e in ds.examples]
    (tmp_path / tts.MANIFEST).write_text(json.dumps(manifest))
    x = teacher.load_features(ds.examples, str(tmp_path), None, max_length=128, num_mel_bins=128)
    assert x.shape == (6, 128, 128)
    manifest[3]["text_hash"] = tts.text_hash("another post")  # wavs of other data settings
    (tmp_path / tts.MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(UserError, match="Sample_3.wav was spoken from another text"):
        teacher.load_features(ds.examples, str(tmp_path), None, max_length=128, num_mel_bins=128)


def test_fbank_features_are_computed_once_per_wav_folder(tmp_path, monkeypatch):
    """A second teacher run, search trial or retrain (another workdir) reading the same wavs
    loads the dataset-level cache beside them instead of computing fbank again."""
    import soundfile

    from mh3.audio import tts

    wav_dir = tmp_path / "wavs"
    wav_dir.mkdir()
    example = collections.namedtuple("Example", "index text split")
    examples = [example(i, f"post {i}", "train") for i in range(12)]
    rng = np.random.default_rng(0)
    for e in examples:
        wave = rng.uniform(-0.5, 0.5, 8000).astype(np.float32)
        soundfile.write(wav_dir / tts.wav_name(e.index), wave, 16000)
    calls = []
    real_fbank = feats.fbank
    monkeypatch.setattr(feats, "fbank", lambda *a, **k: calls.append(1) or real_fbank(*a, **k))
    settings = dict(max_length=64, num_mel_bins=128)

    def load(examples, workdir, **kwargs):
        features = str(tmp_path / workdir / "features") if workdir else None
        return teacher.load_features(examples, str(wav_dir), features, **(settings | kwargs))

    first = load(examples, "run1")
    assert len(calls) == 12 and first.shape == (12, 64, 128)
    [shared] = glob.glob(str(wav_dir / "fbank-*.npy"))
    mtime = os.stat(shared).st_mtime_ns
    path3 = str(wav_dir / tts.wav_name(3))
    np.testing.assert_array_equal(first[3], real_fbank(feats.load_audio(path3), max_length=64))

    again = load(examples, "run2")  # another workdir: nothing computed, nothing written
    assert len(calls) == 12 and os.stat(shared).st_mtime_ns == mtime
    np.testing.assert_array_equal(again, first)
    assert not (tmp_path / "run2").exists()
    # The same wavs in another order (the student reads examples by index): the same file.
    np.testing.assert_array_equal(load(examples[::-1], None), first[::-1])
    assert len(calls) == 12

    # Other settings: another file.
    assert load(examples, None, max_length=32).shape == (12, 32, 128) and len(calls) == 24
    assert len(glob.glob(str(wav_dir / "fbank-*.npy"))) == 2
    # A remade wav: a new dataset key; the per-file cache of run1 still holds the other 11.
    soundfile.write(wav_dir / tts.wav_name(5), np.zeros(8000, np.float32), 16000)
    os.utime(wav_dir / tts.wav_name(5), ns=(mtime + 10**9, mtime + 10**9))
    remade = load(examples, "run1")
    assert len(calls) == 25
    np.testing.assert_array_equal(np.delete(remade, 5, 0), np.delete(first, 5, 0))
    assert not np.array_equal(remade[5], first[5])
    # An unreadable cache file is computed again, not trusted.
    newest = sorted(glob.glob(str(wav_dir / "fbank-*.npy")), key=os.path.getmtime)[-1]
    with open(newest, "wb") as f:
        f.write(b"not an npy file")
    np.testing.assert_array_equal(load(examples, None), remade)
    assert len(calls) == 37


def test_paper_protocol_sets_the_spec_audio_teacher():
    config = teacher_audio.get_config(
        "dataset=deptweet,protocol=paper,model=MIT/ast-finetuned-audioset-10-10-0.4593"
    )
    assert (config.audio.max_length, config.audio.num_mel_bins) == (512, 128)
    assert set(config.audio.stats_splits) == {"train", "val", "test"}  # the notebooks' leak
    assert config.model.position_table == "zeros"
    assert (config.model.hidden_dropout_prob, config.optim.learning_rate) == (0.1, 1e-5)
    assert (config.model.num_hidden_layers, config.model.num_attention_heads) == (6, 6)
    assert (config.optim.plateau_patience, config.optim.plateau_factor) == (4, 0.5)
    assert (config.optim.name, config.optim.weight_decay, config.data.batch_size) == (
        "adam_l2", 0.0, 32,
    )  # fmt: skip
    assert (config.train.epochs, config.train.early_stop_patience) == (25, 5)
    assert config.train.model_choice == "last"
    clean = teacher_audio.get_config("dataset=deptweet")
    assert clean.audio.stats_splits == ("train",)
    assert clean.model.position_table == "resample"
    assert clean.tts.tts.max_examples == 0 and "data" not in clean.tts


def test_the_tiny_random_ast_is_remade_when_its_settings_change(tmp_path):
    from mh3.stages import teacher_audio as stage

    config = teacher_audio.get_config("smoke")
    folder = stage.checkpoint(config, str(tmp_path), seed=0)
    saved = json.loads(open(os.path.join(folder, "config.json")).read())
    assert saved["num_attention_heads"] == config.model.tiny.num_attention_heads == 1
    mtime = os.path.getmtime(os.path.join(folder, "config.json"))
    assert stage.checkpoint(config, str(tmp_path), seed=0) == folder  # same settings: reused
    assert os.path.getmtime(os.path.join(folder, "config.json")) == mtime
    config.model.tiny.num_attention_heads = 2
    assert stage.checkpoint(config, str(tmp_path), seed=0) == folder
    saved = json.loads(open(os.path.join(folder, "config.json")).read())
    assert saved["num_attention_heads"] == 2
    assert sorted(os.listdir(tmp_path)) == ["tiny_random_ast"]  # no temporary folder left
