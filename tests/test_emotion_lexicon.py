"""Emotion lexicons: both file formats, the label mapping, targets and the vocabulary rule."""

import json

import numpy as np
import pytest
from tokenizers import AddedToken
from transformers import AutoTokenizer

from mh3.data import lexicon as lx
from mh3.errors import UserError
from mh3.weights.hub import resolve_checkpoint

NRC_TEXT = (
    "word\temotion\tassociation\n"  # a header line, as some exports have
    "abandon\tanger\t0\nabandon\tfear\t1\nabandon\tnegative\t1\nabandon\tsadness\t1\n"
    "abandon\tjoy\t0\n"
    "happy\tjoy\t1\nhappy\tpositive\t1\nhappy\ttrust\t1\nhappy\tanger\t0\n"
    "shock\tsurprise\t1\nshock\tnegative\t1\n"
    "table\tanger\t0\ntable\tjoy\t0\n"  # listed, but no association: not an emotion word
    "gross\tdisgust\t1\n"
)

SENTIC_TEXT = (
    "CONCEPT\tPRIMARY EMOTION\tSECONDARY EMOTION\tPOLARITY VALUE\tPOLARITY INTENSITY\n"
    "furious\t#rage\t#loathing\tnegative\t-0.9\n"
    "a_little\t#joy\t#surprise\tpositive\t0.2\n"
    "worry\t#anxiety\t#melancholy\tnegative\t-0.6\n"
    "bored\t#boredom\t#calmness\tpositive\t0.1\n"
)


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(resolve_checkpoint("minilm"))


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def bits(lexicon, phrase):
    mask = lexicon.entries[phrase]
    return {name for k, name in enumerate(lexicon.labels) if mask >> k & 1}


def test_nrc_wordlevel(tmp_path):
    lexicon = lx.load_lexicon(write(tmp_path, "nrc.txt", NRC_TEXT))
    assert lexicon.kind == "nrc" and lexicon.labels == lx.NRC_LABELS
    assert bits(lexicon, ("abandon",)) == {"fear", "negative", "sadness"}
    assert bits(lexicon, ("happy",)) == {"other"}  # only joy/positive/trust
    assert bits(lexicon, ("shock",)) == {"surprise", "negative"}
    assert ("table",) not in lexicon.entries
    assert len(lexicon) == 4


def test_nrc_json_matches_wordlevel(tmp_path):
    data = {
        "abandon": ["fear", "negative", "sadness"],
        "happy": ["joy", "positive", "trust"],
        "shock": ["surprise", "negative"],
        "gross": ["disgust"],
    }
    from_json = lx.load_lexicon(write(tmp_path, "nrc.json", json.dumps(data)))
    from_txt = lx.load_lexicon(write(tmp_path, "nrc.txt", NRC_TEXT))
    assert from_json.entries == from_txt.entries


def test_senticnet_table(tmp_path):
    lexicon = lx.load_lexicon(write(tmp_path, "sentic.tsv", SENTIC_TEXT))
    assert lexicon.kind == "senticnet" and lexicon.labels == lx.SENTICNET_LABELS
    assert bits(lexicon, ("furious",)) == {"anger", "disgust", "negative"}
    assert bits(lexicon, ("a", "little")) == {"other"}
    assert bits(lexicon, ("worry",)) == {"fear", "sadness", "negative"}
    assert bits(lexicon, ("bored",)) == {"disgust"}
    comma = SENTIC_TEXT.replace("\t", ",")
    assert lx.load_lexicon(write(tmp_path, "sentic.csv", comma)).entries == lexicon.entries


def test_targets_hand_example(tmp_path):
    lexicon = lx.load_lexicon(write(tmp_path, "sentic.tsv", SENTIC_TEXT))
    docs = [
        "i was furious, just a little worried.",  # "worried" is not "worry": no match
        "a little boring.",
        "nothing here _URL_",
        "i worry. bored!",
    ]
    got = lx.targets(docs, lexicon)
    # labels: anger, disgust, fear, sadness, negative, other
    want = np.array(
        [[1, 1, 0, 0, 1, 1], [0, 0, 0, 0, 0, 1], [0, 0, 0, 0, 0, 0], [0, 1, 1, 1, 1, 0]],
        np.float32,
    )
    np.testing.assert_array_equal(got, want)


def test_default_lexicon_is_nrc_from_package():
    lexicon = lx.load_lexicon("nrc")
    assert lexicon.kind == "nrc" and len(lexicon) > 5000
    got = lx.targets(["i am so angry and afraid", "the table"], lexicon)
    labels = dict(zip(lexicon.labels, got[0], strict=True))
    assert labels["anger"] == 1 and labels["fear"] == 1 and labels["negative"] == 1
    assert got[1].sum() == 0


@pytest.mark.parametrize(
    "name,text,match",
    [
        ("weird.txt", "hello there\nfoo bar\n", "unknown lexicon format"),
        ("empty.txt", "", "unknown lexicon format"),
        ("nrc.txt", "word\temotion\tassociation\nsad\tsadness\t0\n", "holds no word"),
        ("nrc.txt", "sad\tsadness\t1\nsad\tgloomy\t1\n", "line 2: unknown NRC emotion"),
        ("s.tsv", "concept\tprimary emotion\tpolarity\nx\t#joy\tpositive\n", "secondary"),
    ],
)
def test_bad_lexicons_one_line(tmp_path, name, text, match):
    with pytest.raises(UserError, match=match) as err:
        lx.load_lexicon(write(tmp_path, name, text))
    assert "\n" not in str(err.value)


def test_missing_lexicon(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        lx.load_lexicon(str(tmp_path / "nope.txt"))


def test_vocab_rule():
    # A fresh tokenizer: adding a token must not leak into the shared fixture.
    tokenizer = AutoTokenizer.from_pretrained(resolve_checkpoint("minilm"))
    # As the data layer adds them: matched before lower-casing, kept as written.
    tokenizer.add_tokens([AddedToken("_URL_", normalized=False)])
    docs = ["hello world _URL_"] * 5 + ["hello stressful"] * 4 + ["zebra " * 600]
    vocab = lx.build_vocab(tokenizer, docs, min_freq=5)
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    assert list(vocab)[:5] == specials
    assert {"hello", "world", "_URL_"} <= set(vocab)
    # "stressful" (stress + ##ful) occurs only 4 times: under the threshold.
    assert "stress" not in vocab and "##ful" not in vocab and "zebra" in vocab
    assert sorted(vocab.values()) == list(range(len(vocab)))
    mapping = lx.remap(vocab, tokenizer)
    assert len(mapping) == len(tokenizer)
    ids = tokenizer.convert_tokens_to_ids(["hello", "_URL_", "stress"])
    assert list(mapping[ids]) == [vocab["hello"], vocab["_URL_"], vocab["[UNK]"]]


def test_vocab_truncates_to_max_pieces(tokenizer):
    docs = ["alpha " * 3 + "omega " * 10] * 2
    assert "omega" in lx.build_vocab(tokenizer, docs, max_pieces=512, min_freq=5)
    # 5 pieces per document (CLS + 3 alpha + SEP): omega never counted
    assert "omega" not in lx.build_vocab(tokenizer, docs, max_pieces=5, min_freq=5)


# protocol=paper (SPEC addendum): `other` whenever a label outside the named ones occurs.
NRC_MIXED = NRC_TEXT + "rage\tanger\t1\nrage\tjoy\t1\n"
SENTIC_MIXED = SENTIC_TEXT + "sulk\t#sadness\t#calmness\tnegative\t-0.3\n"


def test_other_any_outside_is_the_notebooks_rule(tmp_path):
    nrc = write(tmp_path, "nrc.txt", NRC_MIXED)
    clean = lx.load_lexicon(nrc)
    paper = lx.load_lexicon(nrc, other="any_outside")
    assert bits(clean, ("rage",)) == {"anger"}  # clean: a named label hides joy
    assert bits(paper, ("rage",)) == {"anger", "other"}  # paper: joy is outside -> other
    assert bits(paper, ("happy",)) == {"other"}
    assert bits(paper, ("abandon",)) == {"fear", "negative", "sadness"}  # all named
    assert bits(paper, ("shock",)) == {"surprise", "negative"}  # surprise is named in NRC
    sentic = write(tmp_path, "sentic.tsv", SENTIC_MIXED)
    clean = lx.load_lexicon(sentic)
    paper = lx.load_lexicon(sentic, other="any_outside")
    assert bits(clean, ("sulk",)) == {"sadness", "negative"}
    assert bits(paper, ("sulk",)) == {"sadness", "negative", "other"}  # calmness is outside
    # positive polarity alone sets other (boredom -> disgust; calmness; polarity +0.1)
    assert bits(clean, ("bored",)) == {"disgust"}
    assert bits(paper, ("bored",)) == {"disgust", "other"}
    assert bits(paper, ("furious",)) == {"anger", "disgust", "negative"}
    with pytest.raises(UserError, match="other_rule"):
        lx.load_lexicon(nrc, other="sometimes")


def test_min_freq_0_keeps_every_tokenizer_id(tokenizer):
    vocab = lx.build_vocab(tokenizer, ["hello"], min_freq=0)
    assert len(vocab) == len(tokenizer)
    assert list(vocab.values()) == list(range(len(tokenizer)))
    assert (lx.remap(vocab, tokenizer) == np.arange(len(tokenizer))).all()


def test_paper_and_clean_mmemog_options():
    from configs import emotion_embeddings as cfg

    paper = cfg.get_config("protocol=paper,smoke")
    clean = cfg.get_config("smoke")
    assert (paper.encoder.word_embedding_std, clean.encoder.word_embedding_std) == (1.0, 0.02)
    assert (paper.emotion.min_freq, clean.emotion.min_freq) == (0, 5)
    assert (paper.train.model_choice, clean.train.model_choice) == ("last", "best_val")
    assert (paper.emotion.other_rule, clean.emotion.other_rule) == ("any_outside", "none_named")


def test_word_embedding_std_sets_the_table_init():
    """paper: the encoder's word embeddings start from N(0, 1) (a fresh nn.Embedding); clean
    N(0, 0.02); other embeddings keep initializer_range either way."""
    import jax
    import jax.numpy as jnp

    from configs import emotion_embeddings as cfg
    from mh3.stages.emotion_embeddings import build_encoder

    for protocol, want in (("paper", 1.0), ("clean", 0.02)):
        enc = cfg.get_config(f"protocol={protocol},encoder=tiny").encoder
        model = build_encoder(enc, 4000, 0, 6)
        x = {"input_ids": jnp.zeros((1, 8), jnp.int32)}
        params = jax.jit(model.init)(jax.random.PRNGKey(0), x)["params"]["embeddings"]
        std = float(np.std(params["word_embeddings"]["embedding"]))
        assert abs(std - want) < 0.05 * want
        assert abs(float(np.std(params["position_embeddings"]["embedding"])) - 0.02) < 0.002
