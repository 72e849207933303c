"""Parity of the Flax Audio Spectrogram Transformer with HF's ASTForAudioClassification."""

import numpy as np
import pytest
import torch
import transformers as hf
from safetensors.numpy import load_file, save_file

from mh3.weights import ast as ast_weights
from mh3.weights import from_hf

TINY = dict(
    hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
    num_mel_bins=32, max_length=64, num_labels=3,
)  # fmt: skip


@pytest.fixture(scope="module")
def ast_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ast")
    torch.manual_seed(0)
    model = hf.ASTForAudioClassification(hf.ASTConfig(**TINY)).eval()
    with torch.no_grad():  # HF starts these at zero; give them values so the test sees them
        for name, p in model.named_parameters():
            if "token" in name or "position" in name:
                p.normal_(0, 0.5)
    model.save_pretrained(folder)
    return str(folder)


def features(frames=64, seed=0):
    return np.random.RandomState(seed).randn(2, frames, 32).astype(np.float32)


def torch_logits(folder, x, **kwargs):
    model = hf.ASTForAudioClassification.from_pretrained(folder, **kwargs).eval()
    with torch.no_grad():
        return model(torch.tensor(x), output_hidden_states=True)


def flax_out(folder, x, **kwargs):
    model, params = from_hf(folder, **kwargs)
    return model, params, model.apply({"params": params}, {"input_values": x}, train=False)


def maxdiff(a, b):
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b))))


def test_logits_and_hidden_match_hf(ast_folder):
    x = features()
    expect = torch_logits(ast_folder, x)
    _, _, (logits, out) = flax_out(ast_folder, x)
    assert maxdiff(logits, expect.logits) <= 1e-5
    base = hf.ASTModel.from_pretrained(ast_folder).eval()  # the encoder part of the same folder
    with torch.no_grad():
        enc = base(torch.tensor(x))
    assert out["hidden"].shape == (2, ast_weights.ASTConfig(**TINY).num_positions, 32)
    assert maxdiff(out["hidden"], enc.last_hidden_state) <= 1e-5
    assert maxdiff(out["pooled"], enc.pooler_output) <= 1e-5


def test_published_checkpoint_names_load(ast_folder, tmp_path):
    """The hub's AST checkpoints use transformers-4 names; rename ours to those and reload."""
    import re

    old_names = [
        (r"\.layers\.(\d+)\.", r".encoder.layer.\1."),
        (r"\.attention\.q_proj\.", ".attention.attention.query."),
        (r"\.attention\.k_proj\.", ".attention.attention.key."),
        (r"\.attention\.v_proj\.", ".attention.attention.value."),
        (r"\.attention\.o_proj\.", ".attention.output.dense."),
        (r"\.mlp\.fc1\.", ".intermediate.dense."),
        (r"\.mlp\.fc2\.", ".output.dense."),
    ]
    tensors = load_file(f"{ast_folder}/model.safetensors")
    renamed = {}
    for key, value in tensors.items():
        for pattern, repl in old_names:
            key = re.sub(pattern, repl, key)
        renamed[key] = value
    assert (
        "audio_spectrogram_transformer.encoder.layer.0.attention.attention.query.weight" in renamed
    )
    save_file(renamed, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text(open(f"{ast_folder}/config.json").read())
    x = features(seed=1)
    _, _, (a, _) = flax_out(ast_folder, x)
    _, _, (b, _) = flax_out(str(tmp_path), x)
    np.testing.assert_array_equal(a, b)


def test_overrides_match_hf(ast_folder):
    x = features(seed=2)
    kw = dict(num_hidden_layers=1, num_attention_heads=2)
    expect = torch_logits(ast_folder, x, **kw)
    _, params, (logits, _) = flax_out(ast_folder, x, **kw)
    assert list(params["encoder"]) == ["layer_0"]
    assert maxdiff(logits, expect.logits) <= 1e-5


def test_paper_position_table_is_zeros_like_hf(ast_folder):
    """Paper: a shorter max_length leaves the table at HF's initial zeros, trainable."""
    x = features(frames=40, seed=3)
    expect = torch_logits(ast_folder, x, max_length=40, ignore_mismatched_sizes=True)
    model, params, (logits, _) = flax_out(ast_folder, x, max_length=40, position_table="zeros")
    table = params["embeddings"]["position_embeddings"]
    assert table.shape == (1, model.config.num_positions, 32) and not np.any(table)
    assert maxdiff(logits, expect.logits) <= 1e-5


def test_clean_position_table_is_resampled_along_time(ast_folder):
    big = load_file(f"{ast_folder}/model.safetensors")
    old = big["audio_spectrogram_transformer.embeddings.position_embeddings"]
    model, params, _ = flax_out(ast_folder, features(frames=40), max_length=40)
    new = np.asarray(params["embeddings"]["position_embeddings"])
    f, t_old = ast_weights.ASTConfig(**TINY).grid  # 2 x 5
    f2, t_new = model.config.grid  # 2 x 3
    assert f == f2 and (t_old, t_new) == (5, 3)
    np.testing.assert_array_equal(new[:, :2], old[:, :2])  # CLS and distillation rows kept
    old_grid = old[0, 2:].reshape(f, t_old, -1)
    new_grid = new[0, 2:].reshape(f, t_new, -1)
    np.testing.assert_allclose(new_grid[:, 0], old_grid[:, 0])  # end points aligned
    np.testing.assert_allclose(new_grid[:, -1], old_grid[:, -1])
    np.testing.assert_allclose(new_grid[:, 1], old_grid[:, 2], atol=1e-6)  # midpoint of 0..4


def test_wrong_input_shape_raises(ast_folder):
    model, params = from_hf(ast_folder)
    with pytest.raises(ValueError, match=r"\(64, 32\)"):
        model.apply({"params": params}, {"input_values": features(frames=50)})
