"""save_hf: Flax params -> an HF save_pretrained folder that transformers and from_hf read back.

Every parameter is first moved off its initial value with noise (LayerNorm scales, biases and
AST's tokens start at 1 or 0), so a tensor written under the wrong name or in the wrong layout
changes the logits. Settings are off HF's defaults (heads, activation, epsilon, token types,
RoBERTa's pad id, AST strides), so a setting left out of config.json changes the model HF builds.
Logit comparisons are measured max abs diffs on a padded batch.
"""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers as hf
from flax import traverse_util
from safetensors.numpy import load_file

from mh3.models.bert import BertConfig
from mh3.weights import bert as bert_weights
from mh3.weights import from_hf, grow_vocab, save_hf

LABELS = ["anxiety", "depression", "none"]
SMALL = dict(
    vocab_size=77, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
    intermediate_size=37, max_position_embeddings=40, hidden_dropout_prob=0.05,
    attention_probs_dropout_prob=0.07, classifier_dropout=0.15, num_labels=3,
)  # fmt: skip
SETTINGS = {
    "bert": dict(hidden_act="silu", layer_norm_eps=1e-6, type_vocab_size=3, pooler=True),
    "roberta": dict(
        hidden_act="relu", layer_norm_eps=1e-5, type_vocab_size=1, pad_token_id=2, pooler=False
    ),
    "distilbert": dict(hidden_act="relu", type_vocab_size=0, pooler=False),
}
HF_CLASSES = {
    "bert": hf.BertForSequenceClassification,
    "roberta": hf.RobertaForSequenceClassification,
    "distilbert": hf.DistilBertForSequenceClassification,
}


def jitter(params, seed, scale=0.05):
    """Adds N(0, scale) noise to every parameter (deterministic in `seed`)."""
    flat = traverse_util.flatten_dict(params)
    keys = jax.random.split(jax.random.PRNGKey(seed), len(flat))
    noisy = {
        p: v + scale * jax.random.normal(k, v.shape, v.dtype)
        for k, (p, v) in zip(keys, sorted(flat.items()), strict=True)
    }
    return traverse_util.unflatten_dict(noisy)


def padded_batch(config: BertConfig, seed=0):
    """(3, 9) ids with two padded rows (pad ids there, as tokenizers write them), and types."""
    rng = np.random.RandomState(seed)
    ids = rng.randint(3, config.vocab_size, (3, 9))
    mask = np.ones_like(ids)
    mask[1, 5:] = 0
    mask[2, 2:] = 0
    ids[mask == 0] = config.pad_token_id
    types = rng.randint(0, max(config.type_vocab_size, 1), ids.shape)
    return ids, mask, types


def flax_logits(model, params, ids, mask, types=None):
    batch = {"input_ids": jnp.asarray(ids), "attention_mask": jnp.asarray(mask)}
    if types is not None:
        batch["token_type_ids"] = jnp.asarray(types)
    return np.asarray(model.apply({"params": params}, batch, train=False)[0])


def torch_logits(model, ids, mask, types=None):
    kwargs = {"input_ids": torch.tensor(ids), "attention_mask": torch.tensor(mask)}
    if types is not None:
        kwargs["token_type_ids"] = torch.tensor(types)
    with torch.no_grad():
        return model(**kwargs).logits.numpy()


def load_in_transformers(cls, folder):
    """from_pretrained, asserting that HF found every tensor it expects and nothing else."""
    model, info = cls.from_pretrained(folder, output_loading_info=True)
    assert not any(info.values()), info  # missing / unexpected / mismatched keys, errors
    return model.eval()


def maxdiff(a, b):
    return float(np.max(np.abs(np.asarray(a, np.float32) - np.asarray(b, np.float32))))


def same_params(a, b):
    fa, fb = traverse_util.flatten_dict(a), traverse_util.flatten_dict(b)
    assert fa.keys() == fb.keys()
    for path in fa:
        np.testing.assert_array_equal(np.asarray(fa[path]), np.asarray(fb[path]), "/".join(path))


@pytest.fixture(scope="module", params=list(SETTINGS))
def exported(request, tmp_path_factory):
    """(family, model, params, folder): a jittered tiny text classifier written by save_hf."""
    family = request.param
    config = BertConfig(family=family, **SMALL, **SETTINGS[family])
    model = bert_weights.build(config)
    params = model.init(jax.random.PRNGKey(0), bert_weights.example_batch(config))["params"]
    params = jitter(params, seed=1)
    folder = str(tmp_path_factory.mktemp(f"export-{family}"))
    save_hf(folder, model, params, id2label=LABELS)
    return family, model, params, folder


def test_text_classifier_loads_in_transformers_with_same_logits(exported):
    family, model, params, folder = exported
    torch_model = load_in_transformers(hf.AutoModelForSequenceClassification, folder)
    assert type(torch_model) is HF_CLASSES[family]
    ids, mask, types = padded_batch(model.config)
    types = None if family == "distilbert" else types  # HF's DistilBERT takes no token types
    ours = flax_logits(model, params, ids, mask, types)
    diff = maxdiff(ours, torch_logits(torch_model, ids, mask, types))
    print(f"save_hf {family}: max abs logit diff vs transformers {diff:.2e}")
    assert diff <= 1e-4
    assert np.ptp(ours, axis=0).min() > 1e-3  # the rows differ: padding and types are seen
    with open(os.path.join(folder, "config.json")) as f:
        written = json.load(f)
    assert written["model_type"] == family
    assert written["architectures"] == [HF_CLASSES[family].__name__]
    assert written["id2label"] == {str(i): n for i, n in enumerate(LABELS)}
    assert written["label2id"] == {n: i for i, n in enumerate(LABELS)}
    assert torch_model.config.num_labels == 3


def test_text_classifier_reads_back_bitwise(exported):
    _, model, params, folder = exported
    again, again_params = from_hf(folder)
    assert again.config == model.config  # every setting, the head size and the pooler
    same_params(params, again_params)


def test_grown_vocab_and_fresh_head_with_class_names(tiny_bert, tmp_path):
    """The fine-tuning path: a base checkpoint, a new 3-class head, tokens added to the
    tokenizer (`grow_vocab`), saved with class names."""
    tokenizer = hf.AutoTokenizer.from_pretrained(tiny_bert)
    old_vocab = len(tokenizer)
    tokenizer.add_tokens(["<user>", "<url>"])
    model, params = from_hf(tiny_bert, num_labels=3, seed=4)
    model, params = grow_vocab(model, params, len(tokenizer), seed=5)
    params = jitter(params, seed=6)
    save_hf(str(tmp_path), model, params, id2label=dict(enumerate(LABELS)))

    with open(tmp_path / "config.json") as f:
        written = json.load(f)
    assert written["vocab_size"] == old_vocab + 2 == model.config.vocab_size
    assert written["id2label"] == {"0": "anxiety", "1": "depression", "2": "none"}
    enc = tokenizer(
        ["<user> I can't sleep at all <url>", "fine thanks", "<user> ok"],
        padding=True,
        return_tensors="np",
    )
    assert enc["input_ids"].max() == old_vocab + 1 and (enc["attention_mask"] == 0).any()
    args = enc["input_ids"], enc["attention_mask"], enc["token_type_ids"]
    torch_model = load_in_transformers(hf.AutoModelForSequenceClassification, str(tmp_path))
    assert torch_model.config.id2label == dict(enumerate(LABELS))
    diff = maxdiff(flax_logits(model, params, *args), torch_logits(torch_model, *args))
    print(f"save_hf bert, grown vocab: max abs logit diff vs transformers {diff:.2e}")
    assert diff <= 1e-4

    again, again_params = from_hf(str(tmp_path))
    assert again.config == model.config and again.config.num_labels == 3
    same_params(params, again_params)


def test_ast_with_resampled_position_table(tmp_path):
    """An AST loaded for a shorter max_length: the saved config must make HF build the
    resized position table, and HF's forward must then match ours."""
    source = tmp_path / "hf-ast"
    torch.manual_seed(0)
    config = hf.ASTConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
        num_mel_bins=32, max_length=64, frequency_stride=8, time_stride=6, hidden_act="gelu_new",
        layer_norm_eps=1e-6, num_labels=3,
    )  # fmt: skip
    hf.ASTForAudioClassification(config).save_pretrained(source)
    model, params = from_hf(str(source), max_length=40)  # position table resampled along time
    table = params["embeddings"]["position_embeddings"]
    assert (
        table.shape[1]
        == model.config.num_positions
        < model.config.replace(max_length=64).num_positions
    )
    params = jitter(params, seed=2)
    out = str(tmp_path / "export")
    save_hf(out, model, params, id2label=LABELS)

    torch_model = load_in_transformers(hf.ASTForAudioClassification, out)
    assert torch_model.config.max_length == 40
    x = np.random.RandomState(0).randn(2, 40, 32).astype(np.float32)
    ours = model.apply({"params": params}, {"input_values": jnp.asarray(x)}, train=False)[0]
    with torch.no_grad():
        theirs = torch_model(torch.tensor(x)).logits.numpy()
    diff = maxdiff(ours, theirs)
    print(f"save_hf ast: max abs logit diff vs transformers {diff:.2e}")
    assert diff <= 1e-4

    again, again_params = from_hf(out)
    assert again.config == model.config
    same_params(params, again_params)


def test_bf16_compute_is_saved_as_float32(exported, tmp_path):
    _, model, params, folder = exported
    save_hf(str(tmp_path), model.clone(dtype=jnp.bfloat16), params, id2label=LABELS)
    ours = load_file(str(tmp_path / "model.safetensors"))
    ref = load_file(os.path.join(folder, "model.safetensors"))
    assert ours.keys() == ref.keys()
    for name, tensor in ours.items():
        assert tensor.dtype == np.float32, name
        np.testing.assert_array_equal(tensor, ref[name])
    with open(tmp_path / "config.json") as f:
        assert json.load(f)["dtype"] == "float32"


def test_errors(exported, tmp_path):
    family, model, params, _ = exported
    with pytest.raises(ValueError, match="must name each of the head's 3 outputs"):
        save_hf(str(tmp_path), model, params, id2label=["a", "b"])
    with pytest.raises(ValueError, match="distinct name"):
        save_hf(str(tmp_path), model, params, id2label=["a", "b", "a"])
    _, grown = grow_vocab(model, params, model.config.vocab_size + 1, seed=0)
    with pytest.raises(ValueError, match="word_embeddings/embedding: \\(78, 32\\)"):
        save_hf(str(tmp_path), model, grown, id2label=LABELS)  # the model before grow_vocab
    no_head = model.clone(config=model.config.replace(num_labels=0))
    with pytest.raises(ValueError, match="no classification head"):
        save_hf(str(tmp_path), no_head, params, id2label=[])
    flipped = model.clone(config=model.config.replace(pooler=not model.config.pooler))
    flipped_params = flipped.init(jax.random.PRNGKey(0), bert_weights.example_batch(flipped.config))
    with pytest.raises(ValueError, match="pooler"):  # HF's head has a pooler for BERT only
        save_hf(str(tmp_path), flipped, flipped_params["params"], id2label=LABELS)
    (tmp_path / "model.safetensors.index.json").write_text("{}")
    with pytest.raises(ValueError, match="index.json"):
        save_hf(str(tmp_path), model, params, id2label=LABELS)
    assert not (tmp_path / "config.json").exists()  # nothing written by the refused calls


def test_exports_and_the_tiny_random_ast_need_no_torch(tiny_bert, tmp_path):
    """save_hf writes config.json as a dict (transformers' config classes import torch, ~3 s of
    every exporting stage), and the demo's tiny random AST is drawn without torch; both still
    load in transformers, the AST with the logits mh3 computes from the same folder."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    script = f"""if True:
        import sys
        from configs import teacher_audio
        from mh3.stages import teacher_audio as stage
        from mh3.weights import from_hf, save_hf
        model, params = from_hf({tiny_bert!r}, num_labels=2)
        save_hf({str(tmp_path / "bert")!r}, model, params, id2label=["a", "b"])
        print(stage.checkpoint(teacher_audio.get_config("smoke"), {str(tmp_path)!r}, seed=3))
        print("torch" in sys.modules)
    """
    done = subprocess.run([sys.executable, "-c", script], cwd=root, capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    ast_folder, torch_imported = done.stdout.strip().splitlines()[-2:]
    assert torch_imported == "False"
    bert = load_in_transformers(hf.AutoModelForSequenceClassification, str(tmp_path / "bert"))
    assert type(bert) is hf.BertForSequenceClassification
    assert bert.config.id2label == {0: "a", 1: "b"}
    ast = load_in_transformers(hf.ASTForAudioClassification, ast_folder)
    model, params = from_hf(ast_folder)
    assert ast.config.num_attention_heads == model.config.num_attention_heads == 1
    shape = (2, model.config.max_length, model.config.num_mel_bins)
    x = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    ours = model.apply({"params": params}, {"input_values": jnp.asarray(x)}, train=False)[0]
    with torch.no_grad():
        theirs = ast(torch.from_numpy(x)).logits.numpy()
    assert maxdiff(ours, theirs) <= 1e-5
    assert np.ptp(theirs, axis=0).max() > 0  # random weights: the two inputs differ
    tokens = params["embeddings"]["position_embeddings"]
    assert 0.015 < float(np.std(tokens)) < 0.025  # the random table, not HF's zeros
