"""SPEC Stage 0 preprocessing on tricky strings."""

import pytest

from mh3.data.preprocess import deidentify, preprocess, special_tokens


@pytest.mark.parametrize(
    "raw, expected",
    [
        # The SPEC's URL regex stops only at whitespace, so it takes the closing parenthesis.
        ("See (https://x.com/a?b=1) NOW", "see (_URL_ now"),
        ("a http://a.b/c,and more", "a _URL_ more"),
        ("Mail Bob.Smith+x@Mail.co.uk today", "mail _EMAIL_ today"),
        ("hi @John_Doe, and @a stays", "hi _USER_, and @a stays"),
        # E-mails are replaced before users, so the domain is not taken for a user.
        ("x@gmail.com", "_EMAIL_"),
        ("  MiXeD Case, Punctuation!?  ", "mixed case, punctuation!?"),
        ("LOL xD but xDx and XD", "lol xD but xdx and XD"),
        ("re:Python at 10:30 :P", "re:python at 10:30 :P"),
        ("Great:) Sad:-( ok", "great:) sad:-( ok"),
        ("I <3 You </3", "i <3 you </3"),
        ("_URL_ Stays", "_URL_ stays"),
    ],
)
def test_preprocess(raw, expected):
    assert preprocess(raw) == expected


def test_deidentify_order():
    assert deidentify("https://a.com/u@v.com @bob") == "_URL_ _USER_"


def test_emoji_sequences_kept_whole():
    family = "\U0001f468\u200d\U0001f469\u200d\U0001f467"
    thumbs = "\U0001f44d\U0001f3fd"
    text = preprocess(f"Family {family}\U0001f600\U0001f600 Thumbs{thumbs} ©")
    assert text == f"family {family}\U0001f600\U0001f600 thumbs{thumbs} ©"
    assert special_tokens(text) == [family, "\U0001f600", "\U0001f600", thumbs, "©"]


def test_special_tokens_only_bounded_emoticons():
    text = preprocess("xD :P re:python xDx 10:30 :) <3")
    assert special_tokens(text) == ["xD", ":P", ":)", "<3"]


def test_idempotent():
    raw = "Check https://x.y/z @someone x@y.com xD 😀 HELLO"
    once = preprocess(raw)
    assert preprocess(once) == once
