"""Dataset loaders on small folders in each format, the real datasets, splits, and bad input."""

import csv
import json
import os

import numpy as np
import pytest
from conftest import SHARED_DATA

from configs.common import data_config
from mh3.data import load_dataset, registry
from mh3.errors import UserError


def _cfg(name, path="", protocol="clean", **overrides):
    cfg = data_config(name, protocol, False)
    cfg.path = str(path)
    for key, value in overrides.items():
        setattr(cfg, key, value)
    return cfg


def _write_csv(path, header, rows):
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


_SDCNL_HEADER = [
    "", "title", "selftext", "author", "created_utc", "num_comments", "score", "subreddit",
    "url", "is_suicide", "title_len", "selftext_len", "over_18",
]  # fmt: skip


def _sdcnl_rows(n_suicide, n_depression, prefix):
    labels = [1] * n_suicide + [0] * n_depression
    np.random.default_rng(len(labels)).shuffle(labels)
    return [
        [i, f"{prefix} Title {i}", f"Body of post {i}", "u", 0, 1, 2, "r", "", y, 2, 4, False]
        for i, y in enumerate(labels)
    ]


@pytest.fixture(scope="module")
def sdcnl_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sdcnl")
    _write_csv(folder / "training-set.csv", _SDCNL_HEADER, _sdcnl_rows(787, 729, "Train"))
    _write_csv(folder / "testing-set.csv", _SDCNL_HEADER, _sdcnl_rows(193, 186, "Test"))
    return folder


def test_sdcnl_paper_split(sdcnl_dir):
    ds = load_dataset(_cfg("sdcnl", sdcnl_dir, protocol="paper"))
    s = ds.summary()
    assert (s["train"], s["val"], s["test"]) == (1364, 152, 379)
    assert s["classes"] == ["depression", "suicide"]
    assert s["per_class"]["test"] == {"depression": 186, "suicide": 193}
    assert s["per_class"]["train"]["suicide"] + s["per_class"]["val"]["suicide"] == 787
    # The notebooks' rule exactly: np.random.seed(123); choice(arange(n), int(0.9 n)) in order.
    np.random.seed(123)
    expected = np.random.choice(np.arange(1516), int(0.9 * 1516), replace=False)
    assert [e.id for e in ds.split("train")] == [f"training-set:{i + 1}" for i in expected]
    assert [e.index for e in ds.examples] == list(range(1895))
    assert [e.split for e in ds.examples[1363:1366]] == ["train", "val", "val"]
    first = ds.split("test")[0]
    assert (
        first.raw == "Test Title 0 Body of post 0" and first.text == "test title 0 body of post 0"
    )


def test_sdcnl_clean_split_is_stratified(sdcnl_dir):
    ds = load_dataset(_cfg("sdcnl", sdcnl_dir))
    s = ds.summary()
    assert (s["train"], s["val"], s["test"]) == (1364, 152, 379)
    assert abs(s["per_class"]["val"]["suicide"] - round(152 * 787 / 1516)) <= 1
    ids = [e.id for e in ds.split("train")]
    assert ids == sorted(ids, key=lambda i: int(i.split(":")[1]))  # file order kept
    assert load_dataset(_cfg("sdcnl", sdcnl_dir)).fingerprint == ds.fingerprint


def test_deptweet_with_validation_file(tmp_path):
    header = ["tweet_id", "text", "label", "target", "confidence"]
    names = ["non-depressed", "mild", "moderate", "severe"]
    for fname, n in (("train.csv", 20), ("valid.csv", 8), ("test.csv", 8)):
        _write_csv(
            tmp_path / fname,
            header,
            [[i, f"T {i} @bob", names[i % 4], i % 4, 0.9] for i in range(n)],
        )
    ds = load_dataset(_cfg("deptweet", tmp_path))
    assert ds.summary()["train"] == 20 and ds.summary()["val"] == 8
    assert ds.summary()["per_class"]["val"] == {n: 2 for n in names}
    assert ds.split("val")[0].text == "t 0 _USER_"
    os.remove(tmp_path / "valid.csv")  # optional: the validation split then comes from train
    assert ds.classes == ("non-depressed", "mild", "moderate", "severe")
    s = load_dataset(_cfg("deptweet", tmp_path)).summary()
    assert (s["train"], s["val"], s["test"]) == (18, 2, 8)


def test_idendep_folders(tmp_path):
    for sub, n in (("reddit_depression", 6), ("reddit_non_depression", 14)):
        os.makedirs(tmp_path / sub)
        for i in range(n):
            (tmp_path / sub / f"{i:03d}.txt").write_text(
                f"Title {sub} {i}\nBody line one\nline two\n"
            )
    ds = load_dataset(_cfg("idendep", tmp_path))
    s = ds.summary()
    assert s["train"] + s["val"] + s["test"] == 20 and s["test"] == 2
    assert sum(s["per_class"][x]["depression"] for x in ("train", "val", "test")) == 6
    e = next(e for e in ds.examples if e.id == "reddit_depression/002.txt")
    assert e.label == 1 and e.text == "title reddit_depression 2 body line one\nline two"


def test_csv_split_column_and_jsonl(tmp_path):
    _write_csv(
        tmp_path / "all.csv", ["id", "a", "b", "y", "part"],
        [[f"r{i}", f"A{i}", f"B{i}", "neg pos".split()[i % 2], "train dev test".split()[i % 3]]
         for i in range(12)],
    )  # fmt: skip
    cfg = _cfg("csv", tmp_path, text_columns=("a", "b"), label_column="y", id_column="id",
               split_column="part")  # fmt: skip
    cfg.files.train, cfg.files.test = "all.csv", ""
    ds = load_dataset(cfg)
    assert ds.classes == ("neg", "pos")  # the sorted train values
    assert [ds.summary()[s] for s in ("train", "val", "test")] == [4, 4, 4]
    assert ds.examples[0].text == "a0 b0"
    with open(tmp_path / "train.jsonl", "w") as f:
        for i in range(10):
            f.write(json.dumps({"text": f"Post {i}", "label": i % 3}) + "\n")
    with open(tmp_path / "test.jsonl", "w") as f:
        f.write(json.dumps({"text": "Other", "label": 2}) + "\n")
    ds = load_dataset(_cfg("jsonl", tmp_path))
    assert ds.classes == ("0", "1", "2") and ds.split("test")[0].label == 2


def test_demo_is_synthetic_and_fixed():
    ds = load_dataset(_cfg("demo"))
    assert ds.synthetic and ds.classes == ("neutral", "stress", "low_mood")
    assert [ds.summary()[s] for s in ("train", "val", "test")] == [216, 24, 60]
    assert all(e.id.startswith("demo-synthetic-") for e in ds.examples)
    assert load_dataset(_cfg("demo")).fingerprint == ds.fingerprint


@pytest.mark.skipif(not os.path.isdir(SHARED_DATA), reason="no ../shared/data")
def test_real_dreaddit():
    ds = load_dataset(_cfg("dreaddit", os.path.join(SHARED_DATA, "dreaddit")))
    s = ds.summary()
    assert s["train"] + s["val"] == 2838 and s["test"] == 715 and s["val"] == 284
    pool = {c: s["per_class"]["train"][c] + s["per_class"]["val"][c] for c in ds.classes}
    assert pool == {"not_stress": 1350, "stress": 1488}
    assert s["per_class"]["test"] == {"not_stress": 346, "stress": 369}


@pytest.mark.skipif(not os.path.isdir(SHARED_DATA), reason="no ../shared/data")
def test_real_sad():
    ds = load_dataset(_cfg("sad", os.path.join(SHARED_DATA, "sad")))
    s = ds.summary()
    assert s["train"] + s["val"] + s["test"] == 6850 and s["test"] == 685
    total = {c: sum(s["per_class"][x][c] for x in ("train", "val", "test")) for c in ds.classes}
    assert total["Work"] == 1341 and total["Everyday Decision Making"] == 337
    assert total["Health, Fatigue, or Physical Pain"] == 782 and len(ds.classes) == 9
    assert any(e.text == "?" for e in ds.examples)  # very short sentences are kept
    binary = load_dataset(_cfg("sad_stressor", os.path.join(SHARED_DATA, "sad")))
    assert binary.classes == ("not_stressor", "stressor") and len(binary.examples) == 6850


# Bad input: each case ends in one UserError naming the file and row.


@pytest.fixture
def small_csv(tmp_path):
    def make(rows, header=("id", "text", "label"), name="train.csv"):
        _write_csv(tmp_path / name, list(header), rows)
        if name == "train.csv" and not (tmp_path / "test.csv").exists():
            _write_csv(tmp_path / "test.csv", ["id", "text", "label"], [["t1", "x", "a"]])
        return _cfg("csv", tmp_path, id_column="id")

    return make


def _error(cfg) -> str:
    with pytest.raises(UserError) as e:
        load_dataset(cfg)
    assert "\n" not in str(e.value)
    return str(e.value)


def test_missing_folder(tmp_path):
    assert f"{tmp_path}/nope" in _error(_cfg("dreaddit", tmp_path / "nope"))
    assert "--config.data.path" in _error(_cfg("dreaddit", ""))


def test_missing_file(tmp_path):
    assert "dreaddit-train.csv" in _error(_cfg("dreaddit", tmp_path))


def test_missing_column(small_csv):
    msg = _error(small_csv([["a", "x", "a"]], header=("id", "body", "label")))
    assert "train.csv" in msg and "'text'" in msg and "body" in msg


def test_unknown_label(small_csv):
    cfg = small_csv([["a", "x", "a"], ["b", "y", "zzz"]])
    cfg.classes, cfg.label_values = ("A",), ("a",)
    msg = _error(cfg)
    assert "train.csv row 2 (line 3)" in msg and "'zzz'" in msg


def test_empty_text(small_csv):
    cfg = small_csv([["a", "x", "a"], ["b", "   ", "a"], ["c", "y", "a"]])
    assert "train.csv row 2 (line 3)" in _error(cfg)
    cfg.empty_text = "drop"
    assert {e.id for e in load_dataset(cfg).examples} == {"a", "c", "t1"}


def test_undecodable_bytes(tmp_path):
    (tmp_path / "train.csv").write_bytes(b"id,text,label\na,fine,x\nb,caf\xe9 bad,x\n")
    _write_csv(tmp_path / "test.csv", ["id", "text", "label"], [["t", "x", "x"]])
    msg = _error(_cfg("csv", tmp_path, id_column="id"))
    assert "train.csv line 3" in msg and "UTF-8" in msg


def test_duplicate_ids(small_csv):
    msg = _error(small_csv([["a", "x", "a"], ["b", "y", "a"], ["a", "z", "a"]]))
    assert "train.csv row 3" in msg and "'a'" in msg and "row 1" in msg


def test_unknown_dataset_name():
    with pytest.raises(UserError, match="unknown dataset 'nope'.*sdcnl"):
        data_config("nope", "clean", False)
    cfg = _cfg("demo")
    cfg.name = "nope"
    assert "unknown dataset 'nope'" in _error(cfg)


def test_registry_names():
    assert set(registry.NAMES) == {
        "sdcnl",
        "dreaddit",
        "sad",
        "sad_stressor",
        "deptweet",
        "idendep",
        "twitsuicide",
        "csv",
        "jsonl",
        "demo",
    }


def test_smoke_keeps_a_spread_of_rows(sdcnl_dir):
    cfg = data_config("sdcnl", "clean", True)
    cfg.path = str(sdcnl_dir)
    ds = load_dataset(cfg)
    s = ds.summary()
    assert (s["train"], s["val"], s["test"]) == (48, 48, 48)
    assert all(min(s["per_class"][x].values()) > 10 for x in ("train", "val", "test"))
    assert [e.index for e in ds.examples] == list(range(144))
