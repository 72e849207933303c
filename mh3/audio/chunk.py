"""Cutting a post into the pieces a text-to-speech model speaks one at a time (SPEC stage 1).

The text is split into sentences with pysbd (rule based, nothing downloaded at run time); a
sentence longer than `max_words` whitespace-separated words is cut into consecutive chunks of
`max_words` words (the last one shorter). Bark degrades on long inputs, which is why the paper
chunks at 45 words; the same pieces are used for every backend so durations stay comparable.
"""

import functools

MAX_WORDS = 45


@functools.lru_cache(maxsize=1)
def _segmenter():
    import pysbd

    # clean=False: keep the text exactly as preprocessed (cleaning would rewrite it).
    return pysbd.Segmenter(language="en", clean=False)


def split_text(text: str, max_words: int = MAX_WORDS) -> list[str]:
    """Splits `text` into sentences, then sentences into chunks of at most `max_words` words.

    Args:
      text: preprocessed post text (any string; emoji and placeholders are kept as words).
      max_words: the most whitespace-separated words in one piece.

    Returns:
      Non-empty pieces in reading order, each with single spaces between its words; [] for an
      empty or whitespace-only text.
    """
    if max_words < 1:
        raise ValueError(f"max_words must be >= 1, got {max_words}")
    if not text or not text.strip():
        return []
    pieces = []
    for sentence in _segmenter().segment(text):
        words = sentence.split()
        for start in range(0, len(words), max_words):
            pieces.append(" ".join(words[start : start + max_words]))
    return pieces
