"""The `describe` stage: load a checkpoint with from_hf and run one sentence through it.

It proves the whole loading path (name resolution, strict merge, tokenizer) on a real model
and reports the numbers a user checks first: parameter count, architecture, output shapes.
"""

import jax
import numpy as np

from mh3.data.tokenize import load_tokenizer
from mh3.weights import from_hf, resolve_checkpoint


def run(config, workdir: str) -> dict:
    del workdir  # describe writes only config.json and results.json (done by run_stage)
    model, params = from_hf(config.model, num_labels=config.num_labels or None, seed=config.seed)
    # The checkpoint's own tokenizer, loaded as training loads it: the class its
    # tokenizer_config.json names (no torch import) and one error line for a folder without one.
    tokenizer = load_tokenizer(resolve_checkpoint(config.model)).hf
    batch = dict(tokenizer([config.sentence], return_tensors="np"))
    batch = {k: v.astype(np.int32) for k, v in batch.items()}
    logits, out = model.apply({"params": params}, batch, train=False)
    n_params = sum(int(np.prod(p.shape)) for p in jax.tree_util.tree_leaves(params))
    cfg = model.config
    results = {
        "model": config.model,
        "family": cfg.family,
        "parameters": n_params,
        "layers": cfg.num_hidden_layers,
        "hidden_size": cfg.hidden_size,
        "heads": cfg.num_attention_heads,
        "vocab_size": cfg.vocab_size,
        "num_labels": cfg.num_labels,
        "sentence": config.sentence,
        "tokens": int(batch["input_ids"].shape[1]),
        "hidden_shape": list(out["hidden"].shape),
        "pooled_norm": float(np.linalg.norm(np.asarray(out["pooled"]))),
        "logits": None if logits is None else np.asarray(logits)[0].round(4).tolist(),
    }
    print(
        f"{config.model}: {cfg.family}, {n_params / 1e6:.1f}M parameters, {cfg.num_hidden_layers} "
        f"layers x {cfg.hidden_size} hidden x {cfg.num_attention_heads} heads, "
        f"vocab {cfg.vocab_size}; {results['tokens']} tokens -> hidden {results['hidden_shape']}, "
        f"|pooled| = {results['pooled_norm']:.3f}"
    )
    return results
