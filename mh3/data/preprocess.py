"""The one text preprocessing every stage applies (SPEC Stage 0).

1. De-identification, in this order: `https?://[^\\s]+` -> `_URL_`, e-mail addresses -> `_EMAIL_`,
   `@handle` (2+ word characters) -> `_USER_`. The regexes are the SPEC's, byte for byte, so a
   URL wrapped in parentheses swallows the closing parenthesis (`(see http://a.b)` becomes
   `(see _URL_`): that is what the paper's preprocessing did.
2. Emojis (detected by the maintained `emoji` package, including ZWJ sequences and skin tones)
   and text emoticons from `EMOTICONS` are kept whole: neither lower-cased nor split. Emoticons
   made only of symbols (`:)`, `;-)`, `^_^`) count anywhere; emoticons with a letter or digit
   (`xD`, `:P`, `<3`) count only with whitespace or a string edge on both sides, so `re:python`
   or `10:30` stay ordinary text.
3. Everything else is lower-cased; the result is stripped; punctuation is kept.

`special_tokens(text)` lists the emojis and emoticons a preprocessed text holds: the tokens
the tokenizer adds besides `PLACEHOLDERS`.
"""

import re

import emoji

PLACEHOLDERS = ("_URL_", "_EMAIL_", "_USER_")

_URL = re.compile(r"https?://[^\s]+")
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+\.[\w.-]+")
_USER = re.compile(r"@[a-zA-Z0-9_]{2,}")

# Our own list. Symbol-only emoticons cannot occur inside ordinary words, so they match anywhere.
_SYMBOLIC = (
    ":-)", ":)", ":-(", ":(", ";-)", ";)", ":'-(", ":'(", ">:(", ":-|", ":|", "^_^", "^^",
    "-_-", "=)", "=(", ":-*", ":*", "</3", ":]", ":[",
)  # fmt: skip
# Emoticons with letters or digits (or `:/`, which ordinary `file:///` paths contain) need
# whitespace or an edge on both sides.
_BOUNDED = (
    "xD", "XD", "xd", ":D", ":-D", ";D", "=D", ":P", ":-P", ":p", ":-p", ";P", ";p", ":o",
    ":O", ":-O", "o_O", "O_o", "o.O", "T_T", ":3", "<3", ":/", ":-/",
)  # fmt: skip
EMOTICONS = _SYMBOLIC + _BOUNDED


def _alternation(items) -> str:
    # Longest first, so `:-)` wins over `:)` and `</3` over `<3`.
    return "|".join(re.escape(s) for s in sorted(items, key=len, reverse=True))


_PROTECTED = re.compile(
    "|".join(
        (
            _alternation(PLACEHOLDERS),
            rf"(?<!\S)(?:{_alternation(_BOUNDED)})(?!\S)",
            _alternation(_SYMBOLIC),
        )
    )
)


def _protected_spans(text: str) -> list[tuple[int, int]]:
    """Sorted, non-overlapping (start, end) spans of placeholders, emojis and emoticons."""
    spans = [(e["match_start"], e["match_end"]) for e in emoji.emoji_list(text)]
    taken = set()
    for start, end in spans:
        taken.update(range(start, end))
    for m in _PROTECTED.finditer(text):
        # An emoji wins over an emoticon sharing a character with it.
        if not taken.intersection(range(m.start(), m.end())):
            spans.append((m.start(), m.end()))
    return sorted(spans)


def deidentify(text: str) -> str:
    """Replaces URLs, e-mail addresses and @users by placeholders, in the SPEC's order."""
    text = _URL.sub("_URL_", text)
    text = _EMAIL.sub("_EMAIL_", text)
    return _USER.sub("_USER_", text)


def preprocess(text: str) -> str:
    """Applies SPEC Stage 0 preprocessing to one raw post (see the module docstring).

    Args:
      text: the raw text as read from the dataset.

    Returns:
      The preprocessed text: de-identified, lower-cased except for placeholders, emojis and
      emoticons, stripped.
    """
    text = deidentify(text)
    pieces, pos = [], 0
    for start, end in _protected_spans(text):
        pieces.append(text[pos:start].lower())
        pieces.append(text[start:end])
        pos = end
    pieces.append(text[pos:].lower())
    return "".join(pieces).strip()


def special_tokens(text: str) -> list[str]:
    """The emojis and emoticons in a preprocessed text, in order of appearance (placeholders
    excluded: the tokenizer always adds those)."""
    found = [text[s:e] for s, e in _protected_spans(text)]
    return [t for t in found if t not in PLACEHOLDERS]


def is_bounded(token: str) -> bool:
    """True for emoticons that only count as whole words (the tokenizer matches them so too)."""
    return token in _BOUNDED
