"""MM-EMOG tables: our .npz round trip, the authors' pickle (torch or numpy), the teacher table."""

import os
import pickle

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer

from mh3.errors import UserError
from mh3.weights import mmemog
from mh3.weights.hub import resolve_checkpoint

VOCAB = {"[PAD]": 0, "[UNK]": 1, "happy": 2, "sad": 3, "_URL_": 4}


def weights(d=6):
    return np.random.RandomState(0).normal(size=(len(VOCAB), d)).astype(np.float32)


def test_npz_round_trip(tmp_path):
    path = str(tmp_path / "table.npz")
    mmemog.save(path, VOCAB, weights())
    vocab_map, w = mmemog.load(path)
    assert vocab_map == VOCAB
    np.testing.assert_array_equal(w, weights())


@pytest.mark.parametrize("kind", ["torch", "numpy", "torch_save"])
def test_authors_pickle(tmp_path, kind):
    path = str(tmp_path / "mmemog.pkl")
    w = weights()
    if kind == "torch_save":
        torch.save({"vocab_map": VOCAB, "weights": torch.from_numpy(w)}, path)
    else:
        data = {"vocab_map": VOCAB, "weights": torch.from_numpy(w) if kind == "torch" else w}
        with open(path, "wb") as f:
            pickle.dump(data, f)
    vocab_map, got = mmemog.load(path)
    assert vocab_map == VOCAB
    np.testing.assert_array_equal(got, w)


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_unsafe_pickle_is_refused(tmp_path):
    path = str(tmp_path / "evil.pkl")
    with open(path, "wb") as f:
        pickle.dump({"vocab_map": VOCAB, "weights": _Evil()}, f)
    with pytest.raises(UserError, match="refusing to unpickle"):
        mmemog.load(path)


@pytest.mark.parametrize(
    "data,match",
    [
        ({"vocab_map": VOCAB}, "'vocab_map' and 'weights'"),
        ({"vocab_map": {"a": 9}, "weights": np.zeros((2, 3))}, "outside weights"),
        ({"vocab_map": VOCAB, "weights": np.zeros(3)}, "V x D"),
    ],
)
def test_malformed_tables(tmp_path, data, match):
    path = str(tmp_path / "bad.pkl")
    with open(path, "wb") as f:
        pickle.dump(data, f)
    with pytest.raises(UserError, match=match):
        mmemog.load(path)


def test_teacher_table_rows():
    tokenizer = AutoTokenizer.from_pretrained(resolve_checkpoint("minilm"))
    w = weights()
    table = mmemog.teacher_table(VOCAB, w, tokenizer)
    assert table.shape == (len(tokenizer), 6) and table.dtype == np.float32
    ids = tokenizer.convert_tokens_to_ids(["happy", "sad", "[PAD]", "[UNK]"])
    np.testing.assert_array_equal(table[ids], w[[2, 3, 0, 1]])
    # other rows: uniform [0, 1) from seed 123, the same whatever the table covers
    other = tokenizer.convert_tokens_to_ids(["the"])[0]
    rest = np.delete(table, ids, axis=0)
    assert rest.min() >= 0 and rest.max() < 1
    again = mmemog.teacher_table({"happy": 0}, w[:1], tokenizer)
    np.testing.assert_array_equal(again[other], table[other])
    full = np.random.RandomState(123).uniform(size=table.shape).astype(np.float32)
    np.testing.assert_array_equal(table[other], full[other])
    with pytest.raises(UserError, match="shares no word piece"):
        mmemog.teacher_table({"notapiece!!": 0}, w[:1], tokenizer)


def test_teacher_export_round_trip(tmp_path):
    import jax.numpy as jnp

    from mh3.models import emotion

    model = emotion.EmotionMLP(
        num_labels=2, vocab_size=5, embed_dim=6, max_length=4, num_layers=2, hidden_size=3
    )
    variables = {
        "params": emotion.init_params(model, seed=0),
        emotion.TABLE: {"embedding": weights()},
    }
    mmemog.save_teacher(str(tmp_path), model, variables, ("no", "yes"))
    loaded, got, classes = mmemog.load_teacher(str(tmp_path))
    assert loaded == model and classes == ("no", "yes")
    batch = {"input_ids": jnp.asarray([[1, 2, 3, 0]], jnp.int32)}
    np.testing.assert_array_equal(model.apply(variables, batch)[0], loaded.apply(got, batch)[0])
    with pytest.raises(UserError, match="not an emotion-teacher export"):
        mmemog.load_teacher(str(tmp_path / "nothing"))
