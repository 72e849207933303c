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


def _saved_teacher(folder: str):
    """A tiny random emotion teacher over MiniLM's tokenizer, saved to `folder`."""
    from mh3 import data
    from mh3.models import emotion

    tokenizer = data.build_tokenizer("minilm")  # placeholders added
    model = emotion.EmotionMLP(
        num_labels=2, vocab_size=tokenizer.vocab_size, embed_dim=6, max_length=8,
        num_layers=2, hidden_size=3, pad_token_id=tokenizer.pad_id,
    )  # fmt: skip
    table = np.random.RandomState(1).uniform(size=(tokenizer.vocab_size, 6)).astype(np.float32)
    variables = {"params": emotion.init_params(model, seed=0), emotion.TABLE: {"embedding": table}}
    mmemog.save_model(
        folder, variables, model=model, tokenizer=tokenizer, classes=("no", "yes"),
        protocol="clean", data_fingerprint="f" * 16,
    )  # fmt: skip
    return model, variables, tokenizer


def test_saved_model_round_trip(tmp_path):
    """model/ -> mh3.load: the same module, variables, tokenizer and metadata; its logits are
    the module's on the training-time preprocessing and tokenisation of raw texts."""
    import jax
    import jax.numpy as jnp

    import mh3
    from mh3 import data

    folder = str(tmp_path / "model")
    model, variables, tokenizer = _saved_teacher(folder)
    loaded = mh3.load(folder)
    assert isinstance(loaded, mmemog.EmotionPredictor) and loaded.model == model
    assert loaded.kind == "emotion" and loaded.classes == ("no", "yes")
    assert loaded.meta["max_len"] == 8 and loaded.meta["data_fingerprint"] == "f" * 16
    assert loaded.tokenizer.added == tokenizer.added == ("_URL_", "_EMAIL_", "_USER_")
    assert loaded.batch_size % jax.local_device_count() == 0
    jax.tree.map(np.testing.assert_array_equal, loaded.variables, jax.device_get(variables))

    raw = ["Look at https://x.y/z NOW", "i feel sad", "@someone hi", "", "a b c d e f g h i j"]
    ids = tokenizer.hf(
        [data.preprocess(t) for t in raw], truncation=True, max_length=8, padding="max_length"
    )["input_ids"]
    want, _ = model.apply(variables, {"input_ids": jnp.asarray(ids, jnp.int32)})
    np.testing.assert_allclose(loaded.logits(raw), want, rtol=1e-6, atol=1e-6)
    probs = loaded.predict(raw)
    assert probs.shape == (5, 2) and np.allclose(probs.sum(-1), 1, atol=1e-6)
    assert loaded.logits([]).shape == (0, 2)


def test_saved_model_errors(tmp_path):
    import mh3
    from mh3.saved_model import META

    with pytest.raises(UserError, match="not an mh3 saved model"):
        mh3.load(str(tmp_path))
    folder = tmp_path / "model"
    _saved_teacher(str(folder))
    meta = (folder / META).read_text()
    (folder / META).write_text(meta.replace('"hidden_size": 3', '"hidden_size": 4'))
    with pytest.raises(UserError, match="does not fit the model"):
        mh3.load(str(folder))
    os.remove(folder / mmemog.VARIABLES)
    with pytest.raises(UserError, match="missing"):
        mh3.load(str(folder))
