"""protocol=paper on a DistilBERT checkpoint (ClinicalBERT): the notebooks' overrides were BERT
key names, so DistilBERT keeps GELU and its `dropout` and `attention_dropout` both take the tuned
dropout, while BERT gets relu and keeps attention dropout 0.1 (SPEC addendum)."""

import pytest
import torch
import transformers as hf

from configs import teacher_text
from mh3 import weights
from mh3.train import finetune


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """Tiny random DistilBERT and BERT classifiers saved as HF folders (GELU, dropout 0.1);
    4 layers of width 48, so the paper row's 4 layers and 12 heads fit."""
    root = tmp_path_factory.mktemp("hf")
    torch.manual_seed(0)
    distil = hf.DistilBertConfig(
        vocab_size=99, dim=48, n_layers=4, n_heads=4, hidden_dim=37, max_position_embeddings=64
    )
    bert = hf.BertConfig(
        vocab_size=99, hidden_size=48, num_hidden_layers=4, num_attention_heads=4,
        intermediate_size=37, max_position_embeddings=64,
    )  # fmt: skip
    out = {}
    for name, cfg, cls in (
        ("distilbert", distil, hf.DistilBertForSequenceClassification),
        ("bert", bert, hf.BertForSequenceClassification),
    ):
        cls(cfg).save_pretrained(root / name)
        out[name] = str(root / name)
    return out


def _loaded(folder, protocol):
    config = teacher_text.get_config(f"protocol={protocol},model={folder}")
    kw = finetune.overrides(config.model, finetune.model_type(folder))
    model, _ = weights.from_hf(folder, num_labels=2, **kw)
    return config, kw, model.config


def test_paper_distilbert_keeps_gelu_and_ties_attention_dropout(folders):
    config, kw, got = _loaded(folders["distilbert"], "paper")
    dropout = config.model.hidden_dropout_prob
    assert config.model.hidden_act == "relu" and "hidden_act" not in kw
    assert got.hidden_act == "gelu"
    assert got.hidden_dropout_prob == got.attention_probs_dropout_prob == dropout != 0.1
    # what HF builds from the notebooks' effective DistilBERT keys is the same model
    ref = hf.DistilBertConfig.from_pretrained(
        folders["distilbert"], dropout=dropout, attention_dropout=dropout
    )
    exported = weights.bert.hf_config(got)
    assert (exported["activation"], exported["dropout"], exported["attention_dropout"]) == (
        ref.activation, ref.dropout, ref.attention_dropout,
    )  # fmt: skip


def test_paper_bert_gets_relu_and_keeps_attention_dropout(folders):
    config, kw, got = _loaded(folders["bert"], "paper")
    assert got.hidden_act == "relu"
    assert got.hidden_dropout_prob == config.model.hidden_dropout_prob
    assert got.attention_probs_dropout_prob == 0.1


def test_clean_overrides_reach_every_family(folders):
    config = teacher_text.get_config(f"model={folders['distilbert']}")
    config.model.hidden_act, config.model.hidden_dropout_prob = "relu", 0.3
    kw = finetune.overrides(config.model, "distilbert")
    assert kw == {"hidden_act": "relu", "hidden_dropout_prob": 0.3}
