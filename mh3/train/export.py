"""Text models (text teachers and the student) as saved models, and their predictor.

A text model's folder (mh3.saved_model, kind `text`) is at once:
- a Hugging Face `save_pretrained` folder: `config.json` (with id2label), `model.safetensors`
  (mh3.weights.save_hf) and the tokenizer files, added tokens included, with
  `model_max_length` set to the training max length, so `AutoTokenizer` and
  `AutoModelForSequenceClassification.from_pretrained(folder)` give mh3's probabilities for
  text that went through `mh3.data.preprocess`;
- an mh3 saved model: `mh3.json` with the classes, `max_len`, the compute dtype and the
  preprocessing, read back by `load_predictor` (what `mh3.load` returns for this kind).
"""

import dataclasses

import jax.numpy as jnp
import numpy as np

from mh3 import data, saved_model, weights
from mh3.train import loop, parallel

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
TEXT_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
# What a text model's inputs went through before tokenisation (SPEC Stage 0).
PREPROCESSING = "mh3.data.preprocess: de-identify URLs/emails/users, keep emojis, lower-case"


def save_text_model(
    folder: str,
    model,
    params,
    tokenizer: data.Tokenizer,
    *,
    classes,
    max_len: int,
    protocol: str,
    data_fingerprint: str,
) -> None:
    """Writes a trained BERT-family classifier as a saved model (module docstring)."""
    weights.save_hf(folder, model, params, id2label=list(classes))
    # Truncation in HF then matches training; mh3's own encoding passes max_len explicitly.
    tokenizer.hf.model_max_length = int(max_len)
    tokenizer.save(folder)
    saved_model.write_meta(
        folder,
        kind="text",
        classes=classes,
        protocol=protocol,
        data_fingerprint=data_fingerprint,
        max_len=int(max_len),
        compute_dtype=jnp.dtype(model.dtype).name,
        preprocessing=PREPROCESSING,
        tokenizer={"vocab_size": tokenizer.vocab_size, "added_tokens": list(tokenizer.added)},
    )


class TextPredictor(saved_model.Predictor):
    """A saved text model: raw texts in, logits/probabilities out (see saved_model.Predictor)."""

    def __init__(self, folder: str, meta: dict, batch_size: int = 32):
        super().__init__(folder, meta)
        self.model, self.params = weights.from_hf(
            folder, dtype=DTYPES[meta["compute_dtype"]], num_labels=len(self.classes)
        )
        self.tokenizer = data.load_tokenizer(folder)
        self.max_len = int(meta["max_len"])
        # Whole batches split evenly over the local devices: one compiled shape per bucket.
        n_dev = parallel.device_count()
        self.batch_size = -(-batch_size // n_dev) * n_dev

    def logits(self, texts) -> np.ndarray:
        """(N, C) float32 logits of raw texts, preprocessed exactly as in training."""
        examples = [
            data.Example(id=str(i), text=data.preprocess(t), raw=t, label=0, split="test", index=i)
            for i, t in enumerate(texts)
        ]
        return self.logits_examples(examples)

    def logits_examples(self, examples) -> np.ndarray:
        """(N, C) logits of mh3.data examples (already preprocessed), in the order given."""
        examples = [dataclasses.replace(e, index=i) for i, e in enumerate(examples)]
        encoded = data.encode(self.tokenizer, examples, self.max_len)
        buckets = data.bucket_lengths(encoded.lengths, self.max_len, 6, 8)
        batches = data.batches(
            encoded, self.batch_size, pad_id=self.tokenizer.pad_id, train=False, buckets=buckets
        )
        return loop.predict_logits(
            self.model.apply, {"params": self.params}, batches, len(examples), TEXT_INPUTS
        )


def load_predictor(folder: str, meta: dict) -> TextPredictor:
    """The predictor `mh3.load` returns for a text model."""
    return TextPredictor(folder, meta)
