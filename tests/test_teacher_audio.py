"""The audio-teacher stage end to end (tts -> fbank -> tiny AST -> export -> predict), and its parts."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from configs import teacher_audio
from mh3 import data
from mh3.audio import features as feats
from mh3.audio import teacher
from mh3.errors import UserError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_smoke_run_through_launch_exports_a_teacher_that_predicts(tmp_path):
    workdir = tmp_path / "audio"
    cmd = [
        sys.executable, "launch.py", "--config=configs/teacher_audio.py:smoke",
        f"--workdir={workdir}", "--config.data.max_per_split=4",
    ]  # fmt: skip
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((workdir / "results.json").read_text())
    for split in ("val", "test"):
        assert {"accuracy", "f1_macro", "f1_weighted", "confusion_matrix"} <= set(results[split])
        assert results[split]["n"] == results["data"][split] == 4
    assert results["random_init_model"] is True
    # The stage pulled the tts stage into <workdir>/tts: one wav per example.
    wav_dir = results["wav_dir"]
    assert wav_dir == str(workdir / "tts" / "wavs")
    assert len([f for f in os.listdir(wav_dir) if f.endswith(".wav")]) == 12

    folder = str(workdir / "params")
    model, params, meta = teacher.load_audio_teacher(folder)
    assert meta["classes"] == results["data"]["classes"]
    assert meta["max_length"] == 128 and model.config.hidden_size == 32
    # clean protocol: the random checkpoint's 1,024-frame table resampled to 12 x 12 patches
    # (a zero table, the paper's rule, would still be ~0 after two small steps).
    pos = params["embeddings"]["position_embeddings"]
    assert pos.shape == (1, 12 * 12 + 2, 32) and float(np.abs(pos).max()) > 0.01
    # clean protocol: statistics from the train audio only.
    train_feats = [
        feats.fbank(feats.load_audio(os.path.join(wav_dir, f"Sample_{i}.wav")), max_length=128)
        for i in range(4)
    ]
    stats = feats.compute_stats(train_feats)
    assert meta["stats"]["mean"] == pytest.approx(stats["mean"], rel=1e-6)
    assert meta["stats"]["std"] == pytest.approx(stats["std"], rel=1e-6)

    config = teacher_audio.get_config("smoke")
    config.data.max_per_split = 4
    ds = data.load_dataset(config.data)
    logits = teacher.predict(folder, ds, wav_dir, batch_size=5)
    assert logits.shape == (12, 3) and logits.dtype == np.float32
    assert np.all(np.isfinite(logits))

    # The same numbers from a plain per-batch forward on features made here from the wavs.
    x = np.stack(
        [
            feats.normalize(
                feats.fbank(feats.load_audio(os.path.join(wav_dir, f"Sample_{e.index}.wav")),
                            max_length=128),
                meta["stats"],
            )
            for e in ds.examples
        ]
    )  # fmt: skip
    expect = np.concatenate(
        [
            np.asarray(model.apply({"params": params}, {"input_values": x[i : i + 4]})[0])
            for i in range(0, 12, 4)
        ]
    )
    np.testing.assert_allclose(logits, expect, atol=1e-5, rtol=1e-5)
    test_rows = [e.index for e in ds.examples if e.split == "test"]
    labels = np.array([ds.examples[i].label for i in test_rows])
    accuracy = float(np.mean(logits[test_rows].argmax(-1) == labels))
    assert accuracy == pytest.approx(results["test"]["accuracy"])


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
