"""Tokenisation: a Hugging Face fast tokenizer plus the SPEC's added tokens, and encoding.

`build_tokenizer` loads the tokenizer of a checkpoint folder or alias (`minilm`) and adds
`_URL_`, `_EMAIL_`, `_USER_` and every emoji/emoticon found in the chosen splits of a dataset,
sorted, so the same data gives the same ids. The tokens are added un-normalised (matched before
the lower-casing normaliser, so `_URL_` and `xD` survive); emoticons with letters only match as
whole words, as in preprocessing. The model's word embeddings must then have at least
`tokenizer.vocab_size` rows (`mh3.weights.grow_vocab`).
"""

import dataclasses
import json
import os

import numpy as np
from absl import logging

from mh3.data import preprocess as pre
from mh3.errors import UserError
from mh3.weights.hub import resolve_checkpoint


@dataclasses.dataclass
class Tokenizer:
    """An HF tokenizer with the tokens mh3 added to it."""

    hf: object  # transformers.PreTrainedTokenizerFast
    base_vocab_size: int  # rows before adding tokens
    added: tuple[str, ...]  # tokens that were new to the vocabulary, in id order

    @property
    def vocab_size(self) -> int:
        """Rows the model's word embeddings need (base + added)."""
        return len(self.hf)

    @property
    def num_added(self) -> int:
        """How many rows the word embeddings grow by."""
        return self.vocab_size - self.base_vocab_size

    @property
    def pad_id(self) -> int:
        return int(self.hf.pad_token_id)

    def save(self, folder: str) -> None:
        """Writes the tokenizer, added tokens included; `load_tokenizer(folder)` reads it back."""
        self.hf.save_pretrained(folder)


def _tokenizer_class(folder: str):
    """The class `tokenizer_config.json` in `folder` names, imported on its own; else
    AutoTokenizer.

    AutoTokenizer picks the same class, but importing it pulls in transformers' model
    configuration code and with it torch: 4.1 s against 2.2 s for BertTokenizer alone (2-core
    AMD EPYC Zen 4). With this, and with `save_hf` writing config.json without those classes,
    a pipeline that reads safetensors checkpoints never imports torch."""
    import transformers

    try:
        with open(os.path.join(folder, "tokenizer_config.json")) as f:
            name = json.load(f).get("tokenizer_class")
    except (OSError, ValueError, AttributeError):
        name = None  # a hub name, or no usable config: AutoTokenizer sorts it out
    cls = getattr(transformers, name, None) if isinstance(name, str) else None
    if isinstance(cls, type) and issubclass(cls, transformers.PreTrainedTokenizerBase):
        return cls
    return transformers.AutoTokenizer


def _auto_tokenizer(folder: str):
    try:
        hf = _tokenizer_class(folder).from_pretrained(folder)
    except (OSError, ValueError) as e:
        raise UserError(
            f"cannot load a tokenizer from {folder!r}: {str(e).splitlines()[0]}"
        ) from None
    if not getattr(hf, "is_fast", False):
        raise UserError(f"{folder}: mh3 needs a fast (tokenizer.json) tokenizer")
    # transformers 5 builds a tokenizer of special tokens alone for a folder without tokenizer
    # files (no error), which would turn every word into [UNK].
    if len(hf.get_vocab()) <= len(hf.all_special_tokens):
        raise UserError(
            f"{folder}: no tokenizer files (tokenizer.json, or vocab.txt / vocab.json); copy them "
            "from the checkpoint this model came from"
        )
    if hf.pad_token_id is None:
        raise UserError(f"{folder}: the tokenizer has no pad token")
    return hf


def found_tokens(dataset, splits=("train",)) -> list[str]:
    """The placeholders, then the emojis/emoticons in `splits` of `dataset`, sorted."""
    special = {t for e in dataset.examples if e.split in splits for t in pre.special_tokens(e.text)}
    return list(pre.PLACEHOLDERS) + sorted(special)


def build_tokenizer(name: str, dataset=None, *, splits=("train",)) -> Tokenizer:
    """Loads the tokenizer of checkpoint `name` and adds the SPEC's tokens.

    Args:
      name: a checkpoint folder, an alias such as 'minilm', or a hub name.
      dataset: a mh3.data.Dataset whose emojis/emoticons are added (None: placeholders only).
      splits: the splits searched for emojis/emoticons (clean: train only).

    Returns:
      The Tokenizer; `num_added` is how many rows the word embeddings grow by.
    """
    from tokenizers import AddedToken

    hf = _auto_tokenizer(resolve_checkpoint(name))
    base = len(hf)
    tokens = found_tokens(dataset, splits) if dataset is not None else list(pre.PLACEHOLDERS)
    vocab = hf.get_vocab()
    new = [t for t in tokens if t not in vocab]
    hf.add_tokens([AddedToken(t, normalized=False, single_word=pre.is_bounded(t)) for t in new])
    logging.info("tokenizer %s: %d base ids, %d added", name, base, len(hf) - base)
    return Tokenizer(hf, base, tuple(new))


def load_tokenizer(folder: str, base_vocab_size: int | None = None) -> Tokenizer:
    """Reads a tokenizer written by `Tokenizer.save` (added tokens included)."""
    hf = _auto_tokenizer(folder)
    added = tuple(sorted(hf.get_added_vocab(), key=hf.get_added_vocab().get))
    added = tuple(t for t in added if t not in hf.all_special_tokens)
    base = base_vocab_size if base_vocab_size is not None else len(hf) - len(added)
    return Tokenizer(hf, base, added)


@dataclasses.dataclass(frozen=True)
class Encoded:
    """Token ids of some examples, unpadded, truncated to `max_len`."""

    ids: tuple[np.ndarray, ...]  # int32, one array per example, [CLS] ... [SEP]
    labels: np.ndarray  # int32 (n,)
    index: np.ndarray  # int32 (n,), the global example index
    full_lengths: np.ndarray  # int32 (n,), lengths before truncation
    max_len: int

    @property
    def lengths(self) -> np.ndarray:
        return np.minimum(self.full_lengths, self.max_len)


def token_lengths(tokenizer: Tokenizer, examples) -> np.ndarray:
    """Token counts of the examples' texts, [CLS] and [SEP] included, without truncation."""
    if not examples:
        return np.zeros(0, np.int32)
    out = tokenizer.hf([e.text for e in examples], add_special_tokens=True, verbose=False)
    return np.array([len(ids) for ids in out["input_ids"]], np.int32)


def max_len_for(tokenizer: Tokenizer, train_examples, cap: int) -> int:
    """SPEC: `min(cap, longest tokenised train text)`, counting [CLS] and [SEP]."""
    lengths = token_lengths(tokenizer, train_examples)
    return int(min(cap, lengths.max(initial=2)))


def encode(tokenizer: Tokenizer, examples, max_len: int) -> Encoded:
    """Tokenises `examples` (preprocessed texts), truncating to `max_len` tokens."""
    texts = [e.text for e in examples]
    full = token_lengths(tokenizer, examples)
    if texts:
        out = tokenizer.hf(texts, truncation=True, max_length=max_len, verbose=False)
        ids = tuple(np.asarray(x, np.int32) for x in out["input_ids"])
    else:
        ids = ()
    return Encoded(
        ids=ids,
        labels=np.array([e.label for e in examples], np.int32),
        index=np.array([e.index for e in examples], np.int32),
        full_lengths=full,
        max_len=max_len,
    )
