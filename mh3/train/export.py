"""Text models (text teachers and the student) as saved models, and their predictor.

A text model's folder (mh3.saved_model, kind `text`) is at once:
- a Hugging Face `save_pretrained` folder: `config.json` (with id2label), `model.safetensors`
  (mh3.weights.save_hf) and the tokenizer files, added tokens included, with
  `model_max_length` set to the training max length, so `AutoTokenizer` and
  `AutoModelForSequenceClassification.from_pretrained(folder)` give mh3's probabilities for
  text that went through `mh3.data.preprocess`;
- an mh3 saved model: `mh3.json` with the classes, `max_len`, the compute dtype and the
  preprocessing, read back by `TextPredictor` (what `mh3.load` returns for this kind).
"""

import jax.numpy as jnp

from mh3 import data, saved_model, weights

TEXT_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


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
    inputs = saved_model.save_tokenizer(folder, tokenizer, max_len)
    saved_model.write_meta(
        folder, kind="text", classes=classes, protocol=protocol,
        data_fingerprint=data_fingerprint, compute_dtype=jnp.dtype(model.dtype).name, **inputs,
    )  # fmt: skip


class TextPredictor(saved_model.TextPredictorBase):
    """A saved text model: raw texts in, logits/probabilities out (saved_model.Predictor)."""

    def __init__(self, folder: str, meta: dict, batch_size: int | None = None):
        super().__init__(folder, meta, batch_size)
        self.model, self.params = weights.from_hf(
            folder, dtype=weights.DTYPES[meta["compute_dtype"]], num_labels=len(self.classes)
        )
        self.tokenizer = data.load_tokenizer(folder)
        self.max_len = int(meta["max_len"])
        self._set_model(self.model.apply, {"params": self.params}, TEXT_INPUTS)
