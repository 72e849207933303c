"""Where a BERT training step's time goes: each part of the step in mh3 and in PyTorch.

    python -m mh3.bench --parts [--sizes=minilm,base] [--batch=32] [--length=128]
        [--steps=15] [--workdir=DIR]

`python -m mh3.bench` times whole steps; this splits one into its parts and times each part's
forward + backward (gradients of the inputs and of the part's parameters) in both frameworks,
built from the same architecture (mh3's Flax modules, HF's `modeling_bert` modules with SDPA
attention, random weights):

- `embeddings`: word + position + token-type lookup, LayerNorm;
- `attention`: one layer's self-attention block (q/k/v, scores, softmax, context, output
  projection, residual, LayerNorm);
- `mlp`: one layer's intermediate dense + activation + output dense, residual, LayerNorm;
- `layer`: one whole encoder layer (attention + mlp);
- `adam`: one Adam update of every parameter of the classifier (optax vs torch.optim.Adam);
- `dense matmuls`: only the matrix products of one layer's six dense layers (q, k, v, attention
  output, intermediate, output), each's forward x W and backward x^T dy and dy W^T, nothing
  around them: what the layer costs at the library's matmul speed.

Dropout is off on both sides (PyTorch's costs it more than mh3's hashed masks, see README
"Performance"; here the question is the compute). The two sides alternate call by call in one
process and each cell is the fastest of `--steps` calls, which is the least disturbed by
other jobs on a shared machine. Two rows follow: `step estimate` is embeddings + layers x
layer + adam; `matmul floor` is layers x dense matmuls, a lower bound of each side's step (its
dense layers' matmuls alone, everything else free). It prints a table and, with --workdir,
writes `DIR/parts.json` (host, versions, XLA_FLAGS and every sample, one entry per size).
"""

import copy
import datetime
import functools
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mh3 import host
from mh3.models import bert, transformer


def _mh3_parts(cfg: bert.BertConfig, ids: np.ndarray, x: np.ndarray) -> dict:
    """part -> a no-argument callable running its jitted forward + backward once."""
    kw = transformer.layer_kwargs(cfg, jnp.float32)
    bias = transformer.attention_bias(jnp.ones(ids.shape, jnp.float32))
    hidden = jnp.asarray(x)
    ids_j, types_j = jnp.asarray(ids), jnp.zeros(ids.shape, jnp.int32)
    attention = transformer._AttentionBlock(
        cfg.num_attention_heads, 0.0, 0.0, cfg.layer_norm_eps, cfg.initializer_range, jnp.float32
    )
    # part -> (module, its call arguments given the hidden states); init and apply take the same.
    blocks = {
        "embeddings": (bert.Embeddings(cfg), lambda h: (ids_j, types_j, False)),
        "attention": (attention, lambda h: (h, h, bias, False)),
        "mlp": (_Mlp(cfg), lambda h: (h,)),
        "layer": (transformer.PostLNLayer(**kw), lambda h: (h, bias, False)),
    }
    out = {}
    for name, (module, args) in blocks.items():
        params = module.init(jax.random.PRNGKey(0), *args(hidden))
        grad = jax.jit(
            jax.value_and_grad(
                lambda p, h, m=module, a=args: (m.apply(p, *a(h)) * 0.001).sum(), argnums=(0, 1)
            )
        )
        out[name] = functools.partial(
            lambda g, p, h: jax.block_until_ready(g(p, h)), grad, params, hidden
        )
    model = bert.BertClassifier(cfg)
    inputs = {"input_ids": jnp.asarray(ids[:1]), "attention_mask": jnp.ones((1, ids.shape[1]))}
    params = jax.jit(model.init)(jax.random.PRNGKey(0), inputs)
    params = params["params"]
    opt = optax.adam(1e-4)
    holder = {"p": params, "s": opt.init(params)}
    grads = jax.tree.map(lambda a: jnp.full_like(a, 1e-3), params)

    @functools.partial(jax.jit, donate_argnums=(0, 1))
    def update(p, s, g):
        u, s = opt.update(g, s, p)
        return optax.apply_updates(p, u), s

    def adam():
        holder["p"], holder["s"] = jax.block_until_ready(update(holder["p"], holder["s"], grads))

    out["adam"] = adam
    products = jax.jit(_dense_products)
    operands = [[jnp.asarray(a) for a in group] for group in _dense_operands(cfg, ids.size)]
    out["dense matmuls"] = lambda: jax.block_until_ready(products(*operands))
    return out


def _dense_products(xs, ws, dys) -> list:
    """Each dense layer's three matrix products in a training step: the forward x W and the
    kernel and input gradients x^T dy and dy W^T (jax or torch arrays alike)."""
    return [p for x, w, dy in zip(xs, ws, dys, strict=True) for p in (x @ w, x.T @ dy, dy @ w.T)]


def _dense_operands(cfg: bert.BertConfig, rows: int) -> tuple[list, list, list]:
    """(inputs, kernels, output gradients) of one layer's six dense layers, random float32."""
    d, f = cfg.hidden_size, cfg.intermediate_size
    rng = np.random.default_rng(1)
    shapes = [(d, d)] * 4 + [(d, f), (f, d)]

    def draw(*shape):
        return rng.standard_normal(shape, np.float32)

    return ([draw(rows, k) for k, _ in shapes], [draw(k, n) for k, n in shapes],
            [draw(rows, n) for _, n in shapes])  # fmt: skip


class _Mlp(transformer.nn.Module):
    """The MLP half of a PostLNLayer (HF `intermediate` + `output`)."""

    cfg: bert.BertConfig

    @transformer.nn.compact
    def __call__(self, x):
        c = self.cfg
        h = transformer.Intermediate(
            c.intermediate_size, c.hidden_act, c.initializer_range, name="intermediate"
        )(x)
        return transformer.Projection(
            c.hidden_size, 0.0, c.layer_norm_eps, c.initializer_range, name="output"
        )(h, x, False)


def _torch_parts(cfg: bert.BertConfig, ids: np.ndarray, x: np.ndarray, torch_model) -> dict:
    """The same parts from HF `modeling_bert` (SDPA attention, eval mode: no dropout)."""
    import torch
    from transformers.models.bert import modeling_bert as hf

    torch.manual_seed(0)
    model = torch_model(cfg)  # its parameters for Adam; a copy of its config for the parts
    hf_cfg = copy.deepcopy(model.config)
    hf_cfg.hidden_dropout_prob = hf_cfg.attention_probs_dropout_prob = 0.0
    ids_t = torch.from_numpy(ids).long()
    hidden = torch.from_numpy(x).requires_grad_(True)
    mlp_in, mlp_out = hf.BertIntermediate(hf_cfg), hf.BertOutput(hf_cfg)
    blocks = {
        "embeddings": (hf.BertEmbeddings(hf_cfg), lambda m: m(input_ids=ids_t)),
        "attention": (hf.BertAttention(hf_cfg), lambda m: m(hidden)[0]),
        "mlp": (
            torch.nn.ModuleList([mlp_in, mlp_out]),
            lambda m: m[1](m[0](hidden), hidden),
        ),
        "layer": (hf.BertLayer(hf_cfg), lambda m: _first(m(hidden))),
    }
    out = {}
    for name, (module, run) in blocks.items():
        module.eval()

        def step(m=module, r=run):
            m.zero_grad(set_to_none=True)
            hidden.grad = None
            (r(m) * 0.001).sum().backward()

        out[name] = step
    for p in model.parameters():
        p.grad = torch.full_like(p, 1e-3)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    out["adam"] = opt.step
    operands = [[torch.from_numpy(a) for a in group] for group in _dense_operands(cfg, ids.size)]
    out["dense matmuls"] = functools.partial(torch.no_grad()(_dense_products), *operands)
    return out


def _first(y):
    return y[0] if isinstance(y, tuple) else y


def measure(
    size: str,
    cfg: bert.BertConfig,
    batch: int,
    length: int,
    repeats: int,
    torch_model,
    report=print,
) -> dict:
    """Times every part of `cfg` (a BERT size of mh3.bench) on both sides, the PyTorch twin
    built by `torch_model(cfg)` (mh3.bench's, passed in because `python -m mh3.bench` runs
    that module as __main__); returns one parts.json entry."""
    cfg = cfg.replace(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    rng = np.random.default_rng(0)
    ids = rng.integers(1000, cfg.vocab_size, size=(batch, length)).astype(np.int32)
    x = (rng.standard_normal((batch, length, cfg.hidden_size)) * 0.5).astype(np.float32)
    sides = {"mh3": _mh3_parts(cfg, ids, x), "torch": _torch_parts(cfg, ids, x, torch_model)}
    samples = {name: {side: [] for side in sides} for name in sides["mh3"]}
    for name in samples:
        for side in sides:  # warm-up: compilation, allocator
            sides[side][name]()
            sides[side][name]()
        for _ in range(repeats):
            for side in sides:
                start = time.perf_counter()
                sides[side][name]()
                samples[name][side].append((time.perf_counter() - start) * 1e3)
    best = {n: {s: min(v) for s, v in by_side.items()} for n, by_side in samples.items()}
    layers = cfg.num_hidden_layers
    best["step estimate"] = {
        s: best["embeddings"][s] + layers * best["layer"][s] + best["adam"][s] for s in sides
    }
    best["matmul floor"] = {s: layers * best["dense matmuls"][s] for s in sides}
    report(f"{size} (batch {batch} x {length} tokens, {layers} layers), forward + backward, "
           f"fastest of {repeats}; ratio = torch / mh3 (above 1: mh3 faster)")  # fmt: skip
    report(f"{'part':14} {'mh3 ms':>9} {'torch ms':>9} {'ratio':>6}")
    for name, b in best.items():
        report(f"{name:14} {b['mh3']:9.1f} {b['torch']:9.1f} {b['torch'] / b['mh3']:6.2f}")
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "host": host.host_info(),
        "versions": host.versions(True),
        "XLA_FLAGS": os.environ.get("XLA_FLAGS", ""),
        "size": size, "config": {k: getattr(cfg, k) for k in ("hidden_size", "num_hidden_layers",
        "num_attention_heads", "intermediate_size", "vocab_size")}, "batch": batch, "length": length,
        "dropout": 0.0, "best_ms": best, "samples_ms": samples,
    }  # fmt: skip
