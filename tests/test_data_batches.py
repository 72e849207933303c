"""Tokenisation with added tokens (real MiniLM tokenizer), max_len, batches, buckets, the stage."""

import csv
import itertools
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT, SHARED_DATA

from configs.common import data_config
from mh3 import data
from mh3.data import batching
from mh3.data.prepare import token_stats


@pytest.fixture(scope="module")
def demo():
    cfg = data_config("demo", "clean", False)
    return cfg, data.prepare(cfg)


def test_added_tokens(demo, tmp_path):
    _, prep = demo
    tok = prep.tokenizer
    assert tok.base_vocab_size == 30522 and tok.vocab_size == 30522 + tok.num_added
    assert tok.added[:3] == ("_URL_", "_EMAIL_", "_USER_")
    assert {"xD", ":)", "<3", "😔"} <= set(tok.added)
    pieces = tok.hf.tokenize("see _URL_ now xD 😔😔 re:python :)")
    assert pieces == ["see", "_URL_", "now", "xD", "😔", "😔", "re", ":", "python", ":)"]
    ids = tok.hf("_URL_ xD")["input_ids"]
    assert all(i >= tok.base_vocab_size for i in ids[1:-1])
    tok.save(str(tmp_path))
    again = data.load_tokenizer(str(tmp_path))
    assert again.vocab_size == tok.vocab_size and again.added == tok.added
    text = prep.dataset.examples[3].text
    assert again.hf(text)["input_ids"] == tok.hf(text)["input_ids"]


def test_clean_adds_only_train_tokens():
    ds = data.load_dataset(data_config("demo", "clean", False))
    extra = ds.split("test")[0]
    object.__setattr__(extra, "text", extra.text + " 🦄")
    clean = data.build_tokenizer("minilm", ds, splits=("train",))
    paper = data.build_tokenizer("minilm", ds, splits=("train", "val", "test"))
    assert "🦄" not in clean.added and "🦄" in paper.added


def test_max_len_and_truncation(demo):
    _, prep = demo
    tok, train = prep.tokenizer, prep.dataset.split("train")
    longest = max(len(tok.hf(e.text)["input_ids"]) for e in train)
    assert prep.max_len == longest  # [CLS] and [SEP] counted
    assert data.max_len_for(tok, train, 12) == 12
    enc = data.encode(tok, train, 12)
    assert max(len(x) for x in enc.ids) == 12
    assert all(x[-1] == tok.hf.sep_token_id and x[0] == tok.hf.cls_token_id for x in enc.ids)
    assert (enc.full_lengths > 12).all() and (enc.lengths == 12).all()


def _check_batch(batch, enc, seq_lens):
    b, length = batch["input_ids"].shape
    assert length in seq_lens
    assert all(batch[k].dtype == np.int32 for k in batch)
    real = batch["mask"] == 1
    assert (batch["index"][~real] == -1).all()
    assert (batch["attention_mask"].sum(1) >= 1).all()  # no fully masked row
    pos = {int(i): k for k, i in enumerate(enc.index)}
    for row in np.flatnonzero(real):
        k = pos[int(batch["index"][row])]
        n = len(enc.ids[k])
        assert batch["attention_mask"][row].sum() == n
        assert (batch["input_ids"][row, :n] == enc.ids[k]).all()
        assert batch["label"][row] == enc.labels[k]


def test_eval_batches_cover_everything_once(demo):
    _, prep = demo
    enc = prep.encoded["val"]  # 24 examples, batch 10: the last batch has 4 real rows
    got = list(prep.batches("val", 10, train=False))
    assert len(got) == 3 == data.num_batches(24, 10)
    assert [int(b["mask"].sum()) for b in got] == [10, 10, 4]
    for b in got:
        _check_batch(b, enc, prep.buckets)
    seen = np.concatenate([b["index"][b["mask"] == 1] for b in got])
    assert sorted(seen) == sorted(enc.index)
    # Without buckets every batch is max_len long, in global order.
    plain = list(batching.batches(enc, 10, pad_id=0, train=False))
    assert {b["input_ids"].shape for b in plain} == {(10, prep.max_len)}
    assert list(np.concatenate([b["index"] for b in plain])[:24]) == list(enc.index)


def test_train_shuffle_is_seeded_per_epoch(demo):
    _, prep = demo
    enc = prep.encoded["train"]

    def order(seed, epoch):
        bs = prep.batches("train", 32, train=True, seed=seed, epoch=epoch)
        return np.concatenate([b["index"] for b in bs])

    a = order(0, 0)
    assert (a == order(0, 0)).all()
    assert not (a == order(0, 1)).all() and not (a == order(1, 0)).all()
    for epoch in range(2):
        got = order(0, epoch)
        assert sorted(got[got >= 0]) == sorted(enc.index)


def test_paper_shuffle_is_uniform_not_length_grouped():
    """protocol=paper sets group_batches=0: batch i holds permutation[i*B:(i+1)*B] of the
    epoch's seeded uniform permutation (no length sorting, the short batch last), and batches
    are still padded to the bucket lengths."""
    assert data_config("demo", "paper", False).group_batches == 0
    assert data_config("demo", "clean", False).group_batches == 50
    rng = np.random.default_rng(0)
    lengths = rng.integers(3, 120, size=203)
    buckets = batching.bucket_lengths(lengths, 128, 4, 8)
    for epoch in range(2):
        rows, seq_lens = batching.plan(
            lengths, 16, train=True, seed=7, epoch=epoch, buckets=buckets, max_len=128,
            group_batches=0,
        )  # fmt: skip
        perm = np.random.default_rng([7, epoch, 0]).permutation(203)
        want = np.concatenate([perm, np.full(16 * 13 - 203, -1)]).reshape(13, 16)
        assert (rows[:, 0] == want).all()
        longest = [lengths[r[r >= 0]].max() for r in want]
        table = np.asarray(buckets)
        assert list(seq_lens) == [table[table >= m].min() for m in longest]


@pytest.mark.parametrize("process_count", [2, 4])
def test_multi_host_shards(demo, process_count):
    _, prep = demo
    enc = prep.encoded["train"]
    per_process = [
        list(prep.batches("train", 8, train=True, seed=3, epoch=1, process_index=p,
                          process_count=process_count))
        for p in range(process_count)
    ]  # fmt: skip
    steps = {len(x) for x in per_process}
    assert steps == {data.num_batches(len(enc.index), 8, process_count)}
    seen = []
    for step in zip(*per_process, strict=True):
        assert len({b["input_ids"].shape for b in step}) == 1  # one shape per global batch
        assert step[0]["input_ids"].shape[0] == 8 // process_count
        for b in step:
            _check_batch(b, enc, prep.buckets)
            seen.extend(b["index"][b["mask"] == 1])
    assert sorted(seen) == sorted(enc.index)


def test_bucket_lengths_are_optimal():
    rng = np.random.default_rng(0)
    lengths = rng.integers(3, 70, size=200)
    got = data.bucket_lengths(lengths, 64, 3, 8)
    assert len(got) <= 3 and got[-1] == 64

    def cost(table):
        t = np.asarray(table)
        return t[np.searchsorted(t, np.minimum(lengths, 64))].sum()

    cands = range(8, 64, 8)
    best = min(cost((*c, 64)) for k in range(3) for c in itertools.combinations(cands, k))
    assert cost(got) == best


def _launch(*args, cwd):
    return subprocess.run(
        [sys.executable, os.path.join(ROOT, "launch.py"), *args],
        cwd=cwd, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def test_stage_on_demo(tmp_path):
    out = _launch("--config=configs/data.py", f"--workdir={tmp_path}", cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert "SYNTHETIC" in out.stdout
    results = json.load(open(tmp_path / "results.json"))
    d = results["data"]
    assert (d["train"], d["val"], d["test"]) == (216, 24, 60) and results["synthetic"]
    assert d["per_class"]["test"] == {"neutral": 20, "stress": 20, "low_mood": 20}
    assert results["tokenizer"]["num_added"] == len(results["tokenizer"]["added"]) > 3
    with open(tmp_path / "order.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["index"]) for r in rows] == list(range(300))
    assert [r["split"] for r in rows[215:217]] == ["train", "val"]
    saved = data.load_tokenizer(str(tmp_path / "tokenizer"))
    assert list(saved.added) == results["tokenizer"]["added"]
    assert saved.vocab_size == results["tokenizer"]["vocab_size"]


def test_stage_bad_dataset_is_one_line(tmp_path):
    out = _launch("--config=configs/data.py:dataset=nope", f"--workdir={tmp_path}", cwd=ROOT)
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0 and "unknown dataset 'nope'" in out.stderr
    out = _launch(
        "--config=configs/data.py:dataset=dreaddit", f"--config.data.path={tmp_path}/none",
        f"--workdir={tmp_path}", cwd=ROOT,
    )  # fmt: skip
    assert out.returncode == 2 and "does not exist" in out.stderr


@pytest.mark.skipif(not os.path.isdir(SHARED_DATA), reason="no ../shared/data")
def test_dreaddit_bucketing_halves_padding():
    cfg = data_config("dreaddit", "clean", False)
    cfg.path = os.path.join(SHARED_DATA, "dreaddit")
    prep = data.prepare(cfg)
    stats = token_stats(prep, cfg, seed=0)
    assert stats["max_len"] == 256 and stats["truncated"]["train"] > 0
    tokens = stats["train_epoch_tokens"]
    assert tokens["padded_max_len"] >= 2 * tokens["padded_bucketed"]
    assert stats["distinct_shapes"]["all"] <= 8


def test_tokenizer_is_autotokenizers_class_loaded_without_torch(tiny_bert, tmp_path):
    """build_tokenizer imports the class tokenizer_config.json names, not AutoTokenizer (whose
    import pulls in torch: ~2 s of every stage's start), and gets the class AutoTokenizer
    would; a folder without that file still loads, through AutoTokenizer."""
    import transformers

    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(os.path.join(tiny_bert, "tokenizer.json"), bare)
    script = f"""if True:
        import sys
        from mh3.data import tokenize
        tok = tokenize.build_tokenizer({tiny_bert!r})
        print(type(tok.hf).__name__, "torch" in sys.modules)
        print(tokenize.build_tokenizer({str(bare)!r}).hf("an _URL_ xD")["input_ids"])
    """
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    first, second = done.stdout.strip().splitlines()
    auto = transformers.AutoTokenizer.from_pretrained(tiny_bert)
    assert first == f"{type(auto).__name__} False"
    assert second == str(data.build_tokenizer(tiny_bert).hf("an _URL_ xD")["input_ids"])
