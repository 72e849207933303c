"""SPEC stage 1 chunking: sentences, then 45-word pieces."""

import pytest

from mh3.audio.chunk import split_text


def test_sentences_are_split():
    # Preprocessed text is lower-cased; pysbd still splits at . and ?.
    assert split_text("i can't sleep. my exams are next week? what do i do!") == [
        "i can't sleep.",
        "my exams are next week?",
        "what do i do!",
    ]


def test_long_sentence_is_cut_into_45_word_chunks():
    words = [f"w{i}" for i in range(100)]
    pieces = split_text(" ".join(words) + ". short one.")
    assert [len(p.split()) for p in pieces] == [45, 45, 10, 2]
    assert pieces[0].split() == words[:45] and pieces[2].split()[-1] == "w99."
    assert pieces[3] == "short one."


def test_no_punctuation_is_one_piece_or_word_chunks():
    assert split_text("no punctuation at all   just   words") == [
        "no punctuation at all just words"
    ]
    pieces = split_text(" ".join(["word"] * 91))
    assert [len(p.split()) for p in pieces] == [45, 45, 1]


def test_only_emoji_and_placeholders_are_kept():
    assert split_text("😀😀 🙂") == ["😀😀 🙂"]
    assert split_text("_USER_ check _URL_ 😭") == ["_USER_ check _URL_ 😭"]


@pytest.mark.parametrize("text", ["", "   ", "\n\t"])
def test_empty_text_gives_no_pieces(text):
    assert split_text(text) == []


def test_max_words_option():
    assert split_text("a b c d e", max_words=2) == ["a b", "c d", "e"]
    with pytest.raises(ValueError):
        split_text("a", max_words=0)
