"""Training-step speed of mh3 (JAX/XLA) against PyTorch on the same models; results.json.

CPU suite (default), BERT classifier, mh3 vs HF PyTorch on the CPU:
`python -m mh3.bench [--sizes=minilm,base] [--batch=32] [--length=128] [--steps=5]
[--workdir=DIR]`
GPU suite, bf16 throughput and MFU at BERT-base and AST (AudioSet input, 1024 frames x 128 mel)
sizes, batches 32-256, PyTorch bf16 autocast beside it:
`python -m mh3.bench --suite=gpu [--batch=32,64,128,256] [--peak_tflops=N] [--workdir=DIR]`

For each size and batch it builds the same architecture twice from a config with random
weights (mh3's Flax model and the HF PyTorch one), then times one full training step
(forward, backward, Adam update) after warm-up: mh3's pmapped `train_step` (the one every stage
uses) and PyTorch's `zero_grad / forward / backward / step`, both in this process, in train
mode, one side's steps after the other's (`--interleave`: alternating step by step, so that
both see the same spell of a shared machine; CPU only, one device would hold both models).
It prints a table (median step time, examples/s, the ratio, GFLOP/s from XLA's cost
analysis of the traced step, or its jaxpr's products where the backend's analysis has none,
used for both columns; MFU on an accelerator) and, with
--workdir, writes `DIR/results.json`: the host (CPU model and flags), library versions,
XLA_FLAGS, the PRNG, dtype, dropout and interleaving, and per size and batch every timed sample.
Where a step's time goes, part by part (embeddings, attention, MLP, layer, Adam) against
PyTorch: `python -m mh3.bench --parts [--sizes=minilm,base]` (mh3/bench_parts.py); op by op,
from each framework's profiler: `--profile --workdir=DIR` (mh3/bench_profile.py).
Levers to try: `--dtype=bfloat16`, `--prng=threefry2x32`, `--nodonate`, XLA_FLAGS;
`--nodropout` (BERT's dropout off on both sides) tells how much of a gap is dropout.
"""

import datetime
import functools
import os
import statistics
import time

import jax
import jax.extend.core as jax_core
import jax.numpy as jnp
import numpy as np
import optax
from absl import app, flags

from mh3 import bench_profile, files, host
from mh3.models import transformer
from mh3.models.ast import ASTClassifier, ASTConfig
from mh3.models.bert import BertClassifier, BertConfig
from mh3.train import parallel, steps
from mh3.train import state as state_lib

_TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
_BASE = dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072)
# name -> (family, config fields). BERT inputs are --length tokens; AST inputs are the config's
# max_length frames x num_mel_bins (AudioSet AST: 1024 x 128, 101 x 12 patches + 2 tokens).
SIZES = {
    "minilm": ("bert", dict(hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                            intermediate_size=1536)),  # all-MiniLM-L6-v2's shape
    "base": ("bert", _BASE),  # bert-base-uncased's shape
    "ast": ("ast", dict(_BASE, max_length=1024, num_mel_bins=128)),  # MIT/ast-*-audioset
    # The demo's tiny random AST (configs/teacher_audio.py: config.model.tiny, 512 frames).
    "ast-demo": ("ast", dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=1,
                             intermediate_size=64, max_length=512, num_mel_bins=128)),
    "tiny": ("bert", dict(_TINY, vocab_size=2000)),  # tests
    "ast-tiny": ("ast", dict(_TINY, max_length=64, num_mel_bins=32)),  # tests
}  # fmt: skip
SUITES = {
    # interleave: both sides' steps in alternation (one device's memory must hold both models).
    # Off on the CPU too: on 2026-12-04 it gave mh3's BERT-base step 20.7 s against 18.3 s
    # timed alone right after (README, Performance), so it may not be neutral there.
    "cpu": dict(sizes=["minilm", "base"], batch=["32"], dtype="float32", interleave=False),
    "gpu": dict(
        sizes=["base", "ast"], batch=["32", "64", "128", "256"], dtype="bfloat16", interleave=False
    ),
}
# Dense bf16 peak FLOP/s per chip by device-kind substring (vendor data sheets; first match
# wins, so the PCIe H100 comes before the SXM one). Unknown kinds: pass --peak_tflops.
PEAK_BF16_TFLOPS = [
    ("H100 PCIe", 756.0), ("H100", 989.0), ("H200", 989.0), ("GH200", 989.0),
    ("A100", 312.0), ("L4", 121.0), ("TPU v4", 275.0), ("TPU v5 lite", 197.0),
    ("TPU v5e", 197.0), ("TPU v5p", 459.0), ("TPU v6", 918.0),
]  # fmt: skip

_SUITE = flags.DEFINE_enum("suite", "cpu", list(SUITES), "Preset sizes, batches and dtype.")
_SIZES = flags.DEFINE_list("sizes", None, f"Model sizes {list(SIZES)}; default: the suite's.")
flags.register_validator(
    "sizes",
    lambda sizes: sizes is None or all(s in SIZES for s in sizes),
    message=f"unknown size; choose from {', '.join(SIZES)}",
)
_BATCH = flags.DEFINE_list("batch", None, "Examples per step, one or several; default: suite's.")
_LENGTH = flags.DEFINE_integer("length", 128, "Tokens per example (BERT sizes).")
_STEPS = flags.DEFINE_integer("steps", 5, "Timed steps (median reported).")
_WARMUP = flags.DEFINE_integer("warmup", 2, "Untimed steps first (compilation, allocators).")
_DTYPE = flags.DEFINE_enum(
    "dtype", None, ["float32", "bfloat16"], "Compute dtype; default: suite's."
)
# rbg is what training uses (config.train.prng_impl in configs/common.py); with mh3's hashed
# Dropout the implementation only derives a few keys per step, so it hardly matters for speed.
_PRNG = flags.DEFINE_enum(
    "prng", "rbg", ["threefry2x32", "rbg", "unsafe_rbg"], "JAX PRNG implementation (dropout keys)."
)
_DONATE = flags.DEFINE_bool("donate", True, "Donate the state buffers to the jitted step.")
_DROPOUT = flags.DEFINE_bool(
    "dropout", True, "Dropout as in training (BERT: 0.1); --nodropout: off on both sides."
)
_TORCH = flags.DEFINE_bool("torch", True, "Also time PyTorch.")
_INTERLEAVE = flags.DEFINE_bool(
    "interleave", None, "Time the two sides' steps in alternation; default: the suite's."
)
_PEAK = flags.DEFINE_float("peak_tflops", 0.0, "Peak TFLOP/s per device for MFU; 0: look it up.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Write results.json here.")
_PROFILE = flags.DEFINE_bool(
    "profile",
    False,
    "Also trace each side's steps into --workdir; print its costliest ops (mh3.bench_profile).",
)
_PARTS = flags.DEFINE_bool(
    "parts", False, "Time each part of a BERT step instead (mh3.bench_parts; parts.json)."
)


FLOPS_XLA = "XLA cost analysis of the traced mh3 train step, attention batched"
FLOPS_MATMUL = (
    "matrix products in the mh3 train step's jaxpr (the backend's cost analysis gave none)"
)


def make_config(size: str):
    family, fields = SIZES[size]
    if family == "bert":
        return BertConfig(**fields, num_labels=2)
    return ASTConfig(**fields, num_labels=2)


def make_batch(config, batch: int, length: int, seed: int = 0) -> dict:
    """A random host batch for `config`'s family, with labels and an all-real mask."""
    rng = np.random.default_rng(seed)
    out = {
        "label": rng.integers(0, 2, size=batch).astype(np.int32),
        "mask": np.ones(batch, np.float32),
    }
    if isinstance(config, ASTConfig):
        shape = (batch, config.max_length, config.num_mel_bins)
        out["input_values"] = rng.normal(size=shape).astype(np.float32)
    else:
        ids = rng.integers(1000, config.vocab_size, size=(batch, length)).astype(np.int32)
        out.update(
            input_ids=ids, attention_mask=np.ones_like(ids), token_type_ids=np.zeros_like(ids)
        )
    return out


def _error(e: Exception) -> str:
    """A failure kept as text in results.json (XLA and CUDA raise many types)."""
    return f"{type(e).__name__}: {str(e)[:500]}"


def _alternate(sides: dict, warmup: int, n_steps: int) -> tuple[dict, dict]:
    """(side -> seconds of each timed call, side -> error text): `warmup` untimed then `n_steps`
    timed rounds, each calling every side's step once in turn, so that both sides see the
    same spell of a shared machine. A side whose call raises (out of memory, say) is recorded
    and left out of the rounds after."""
    times, errors = {side: [] for side in sides}, {}
    for i in range(warmup + n_steps):
        for side, step in sides.items():
            if side in errors:
                continue
            start = time.perf_counter()
            try:
                step()
            except Exception as e:
                errors[side] = _error(e)
                continue
            if i >= warmup:
                times[side].append(time.perf_counter() - start)
    return times, errors


def build_mh3(config, host_batch: dict, *, dtype, donate: bool):
    """(step, FLOPs per step, their source): mh3's pmapped train_step on `host_batch`, compiled,
    as a no-argument callable that runs one step and waits for it."""
    is_ast = isinstance(config, ASTConfig)
    model = (ASTClassifier if is_ast else BertClassifier)(config, dtype=dtype)
    keys = ("input_values",) if is_ast else ("input_ids", "attention_mask")
    inputs = {k: jnp.asarray(host_batch[k][:1]) for k in keys}
    params = jax.jit(model.init)(jax.random.PRNGKey(0), inputs)["params"]
    state = state_lib.create(model.apply, params, optax.adam(1e-4), jax.random.PRNGKey(1))
    p_train = parallel.pmap(
        functools.partial(steps.train_step, loss_fn=steps.classification_loss),
        donate_argnums=(0,) if donate else (),
    )
    holder = {"state": parallel.replicate(state)}
    batch = parallel.shard(host_batch)
    p_train.lower(holder["state"], batch).compile()  # compiled here, not in a timed step
    flops, source = step_flops(holder["state"], batch)

    def step():
        holder["state"], metrics = p_train(holder["state"], batch)
        jax.block_until_ready((metrics["loss"], holder["state"].step))

    return step, flops, source


def step_flops(state, batch) -> tuple[float, str]:
    """(FLOPs of one pmapped train step over all devices, where the number comes from).

    XLA's cost analysis of the step as traced (before XLA's rewrites), with the attention in
    its batched form, because the cost analysis counts a loop's body once
    (mh3.models.transformer.batched_attention). Where the backend's analysis gives no FLOPs
    (jax 0.11.2 on an H200 gave 0.0), the matrix products of the step's jaxpr (matmul_flops)."""
    # A new function object, so that jax traces it again instead of reusing the timed step's.
    p_count = parallel.pmap(functools.partial(steps.train_step, loss_fn=steps.classification_loss))
    with transformer.batched_attention():
        cost = p_count.lower(state, batch).cost_analysis()
        cost = cost[0] if isinstance(cost, list | tuple) else cost
        flops = float((cost or {}).get("flops", 0.0))
        if flops > 0:
            return flops * parallel.device_count(), FLOPS_XLA
        jaxpr = jax.make_jaxpr(p_count)(state, batch)  # the per-device step inside
    return matmul_flops(jaxpr) * parallel.device_count(), FLOPS_MATMUL


def matmul_flops(jaxpr) -> float:
    """2 x the multiply-adds of every dot_general and convolution in a (Closed)Jaxpr, nested
    ones included: a scan's body times its length, a cond's costliest branch, a while loop's
    body once (its trip count is not in the jaxpr). The products are nearly all of a
    Transformer step's FLOPs; the elementwise rest (softmax, GELU, LayerNorm, Adam) is left
    out, so this reads a few % below XLA's count on the same step."""
    jaxpr = getattr(jaxpr, "jaxpr", jaxpr)  # ClosedJaxpr -> Jaxpr
    total = 0.0
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        if name == "dot_general":
            (contract, _), _ = eqn.params["dimension_numbers"]
            lhs = eqn.invars[0].aval.shape
            total += 2.0 * np.prod(eqn.outvars[0].aval.shape) * np.prod([lhs[d] for d in contract])
        elif name == "conv_general_dilated":
            # Each output element sums (input features per group) x (kernel window) products.
            rhs = eqn.invars[1].aval.shape
            out_features = rhs[eqn.params["dimension_numbers"].rhs_spec[0]]
            total += 2.0 * np.prod(eqn.outvars[0].aval.shape) * np.prod(rhs) / out_features
        elif name == "cond":
            total += max(matmul_flops(branch) for branch in eqn.params["branches"])
        else:
            inner = sum(matmul_flops(sub) for sub in jax_core.jaxprs_in_params(eqn.params))
            total += inner * (eqn.params["length"] if name == "scan" else 1)
    return float(total)


def torch_model(config):
    """The HF PyTorch twin of `config` (random weights, train mode)."""
    import torch
    import transformers

    torch.manual_seed(0)
    if isinstance(config, ASTConfig):
        from mh3.weights import ast as ast_weights

        fields = ast_weights.hf_config(config)
        hf_config = transformers.AutoConfig.for_model(
            fields.pop("model_type"), **fields, attn_implementation="sdpa"
        )
        return transformers.ASTForAudioClassification(hf_config).train()
    hf_config = transformers.BertConfig(
        vocab_size=config.vocab_size,
        hidden_size=config.hidden_size,
        num_hidden_layers=config.num_hidden_layers,
        num_attention_heads=config.num_attention_heads,
        intermediate_size=config.intermediate_size,
        hidden_act=config.hidden_act,
        hidden_dropout_prob=config.hidden_dropout_prob,
        attention_probs_dropout_prob=config.attention_probs_dropout_prob,
        num_labels=config.num_labels,
        attn_implementation="sdpa",
    )
    return transformers.BertForSequenceClassification(hf_config).train()


def build_torch(config, host_batch: dict, *, bf16: bool):
    """PyTorch's forward + backward + Adam step of the same model as a no-argument callable;
    on CUDA when there is one, with bf16 autocast when `bf16` (mh3's bf16 is also
    compute-only)."""
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = torch_model(config).to(device)
    # The fused CUDA Adam is PyTorch's fastest; XLA fuses mh3's update too.
    opt = torch.optim.Adam(model.parameters(), lr=1e-4, fused=device == "cuda")
    text_keys = ("input_ids", "attention_mask", "token_type_ids")
    keys = ("input_values",) if isinstance(config, ASTConfig) else text_keys
    inputs = {k: torch.from_numpy(host_batch[k]).to(device) for k in keys}
    inputs = {k: v if v.is_floating_point() else v.long() for k, v in inputs.items()}
    labels = torch.from_numpy(host_batch["label"]).long().to(device)

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
            loss = model(**inputs, labels=labels).loss
        loss.backward()
        opt.step()
        if device == "cuda":
            torch.cuda.synchronize()

    return step


def peak_flops(device_kind: str, peak_tflops: float = 0.0) -> float | None:
    """Peak bf16 FLOP/s of one device: `peak_tflops` when given, else PEAK_BF16_TFLOPS."""
    if peak_tflops > 0:
        return peak_tflops * 1e12
    for name, tflops in PEAK_BF16_TFLOPS:
        if name.lower() in device_kind.lower():
            return tflops * 1e12
    return None


def _stats(times: list[float], batch: int, flops: float | None, peak: float | None) -> dict:
    median = statistics.median(times)
    total_peak = peak * parallel.device_count() if peak else None
    return {
        "ms_median": median * 1e3,
        "ms_samples": [t * 1e3 for t in times],
        "examples_per_s": batch / median,
        "gflops_per_s": flops / median / 1e9 if flops else None,
        "mfu": flops / median / total_peak if flops and total_peak else None,
    }


def benchmark(
    suite: str = "cpu",
    sizes=None,
    batches=None,
    *,
    length: int = 128,
    n_steps: int = 5,
    warmup: int = 2,
    dtype: str | None = None,
    prng: str = "rbg",
    dropout: bool = True,
    profile_dir: str | None = None,
    interleave: bool | None = None,
    donate: bool = True,
    with_torch: bool = True,
    peak_tflops: float = 0.0,
    report=print,
    on_row=None,
) -> dict:
    """Times every (size, batch) and returns the results.json content; `report` gets the
    table's lines as they come, `on_row` (if given) the content so far after each row.
    With `profile_dir`, each row also profiles both sides there (mh3.bench_profile)."""
    preset = SUITES[suite]
    sizes = list(sizes or preset["sizes"])
    batches = [int(b) for b in (batches or preset["batch"])]
    dtype = dtype or preset["dtype"]
    interleave = preset["interleave"] if interleave is None else interleave
    previous = jax.config.jax_default_prng_impl
    jax.config.update("jax_default_prng_impl", prng)
    device = jax.devices()[0]
    peak = peak_flops(device.device_kind, peak_tflops)
    out = {
        "suite": suite,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "host": host.host_info(),
        "versions": host.versions(with_torch),
        "XLA_FLAGS": os.environ.get("XLA_FLAGS", ""),
        "devices": {"platform": device.platform, "kind": device.device_kind,
                    "count": parallel.device_count()},  # fmt: skip
        "prng": prng, "dtype": dtype, "torch_autocast_bf16": dtype == "bfloat16",
        "donate": donate, "dropout": dropout, "interleave": interleave, "length": length,
        "steps": n_steps, "warmup": warmup,
        "peak_flops_per_device": peak,
        "flops_source": "each row's flops_source; mh3's count is used for both columns",
        "results": [],
    }  # fmt: skip
    report(
        f"devices: {out['devices']['count']} x {device.device_kind}; dtype {dtype}; prng {prng}; "
        f"donate {donate}; interleaved {interleave}; "
        f"peak {peak / 1e12 if peak else '-'} TFLOP/s per device"
    )
    report(
        f"{'model':8} {'batch':>5} {'mh3 ms':>9} {'mh3 ex/s':>9} {'torch ms':>9} "
        f"{'torch ex/s':>10} {'ratio':>6} {'mh3 GF/s':>9} {'torch GF/s':>10} {'mh3 MFU':>7}"
    )
    kw = dict(dtype=dtype, donate=donate, warmup=warmup, n_steps=n_steps, profile_dir=profile_dir,
              interleave=interleave)  # fmt: skip
    try:
        for size in sizes:
            config = make_config(size)
            if not dropout and isinstance(config, BertConfig):  # the AST's dropout is 0 already
                config = config.replace(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
            for b in batches:
                out["results"].append(_measure(size, config, b, length, peak, with_torch, **kw))
                report(_line(out["results"][-1]))
                if out["results"][-1].get("profile"):
                    for line in bench_profile.lines(out["results"][-1]["profile"]):
                        report(line)
                if on_row:
                    on_row(out)
    finally:
        jax.config.update("jax_default_prng_impl", previous)
    return out


def _measure(
    size, config, b, length, peak, with_torch, *, dtype, donate, warmup, n_steps,
    profile_dir=None, interleave=False,
):  # fmt: skip
    """One row of results.json. A side that fails (out of memory at a large batch, say)
    records its error instead of ending the whole suite, whose other rows stay useful.
    `interleave`: time the two sides' steps in alternation (_alternate), else one side's
    steps after the other's."""
    host = make_batch(config, b, length)
    x = host["input_values"] if "input_values" in host else host["input_ids"]
    row = {"size": size, "family": SIZES[size][0], "config": SIZES[size][1], "batch": b,
           "input_shape": list(x.shape), "flops_per_step": None, "flops_source": None,
           "mh3": None, "torch": None, "ratio_torch_over_mh3": None}  # fmt: skip
    after = {"mh3": None, "torch": None}
    if profile_dir:
        where = os.path.join(profile_dir, f"{size}-{b}")
        row["profile"] = {"trace_dir": where, "steps": bench_profile.PROFILE_STEPS}

        def profiler(side, ops):
            def after(step):
                # A profiler that fails (no CUPTI, say) costs its table, not the row's times.
                try:
                    row["profile"][side] = ops(step)
                except Exception as e:
                    row["profile"][side] = {"error": _error(e)}

            return after

        os.makedirs(where, exist_ok=True)
        mh3_dir, torch_path = os.path.join(where, "mh3"), os.path.join(where, "torch.json")
        after = {
            "mh3": profiler("mh3", lambda step: bench_profile.jax_ops(step, mh3_dir)),
            "torch": profiler("torch", lambda step: bench_profile.torch_ops(step, torch_path)),
        }
    builders = {"mh3": lambda: build_mh3(config, host, dtype=jnp.dtype(dtype), donate=donate)}
    if with_torch:
        builders = {
            "torch": lambda: build_torch(config, host, bf16=dtype == "bfloat16"),
            **builders,
        }
    # Interleaved: both sides are built, then timed in alternation. Otherwise (the default)
    # one after the other, PyTorch first: its caching allocator gives the device's memory back
    # when it is done (_free_torch), while XLA keeps what it took for the rest of the process.
    for group in [list(builders)] if interleave else [[side] for side in builders]:
        built = {}
        for side in group:
            try:
                built[side] = builders[side]()
            except Exception as e:
                row[side] = {"error": _error(e)}
        if "mh3" in built:
            built["mh3"], row["flops_per_step"], row["flops_source"] = built["mh3"]
        times, errors = _alternate(built, warmup, n_steps)
        for side in built:
            if side in errors:
                row[side] = {"error": errors[side]}
                continue
            row[side] = times[side]
            if after[side]:
                after[side](built[side])
        if "torch" in group:
            del built  # the last reference to PyTorch's model, so that _free_torch frees it
            _free_torch()
    for side in ("mh3", "torch"):
        if isinstance(row[side], list):
            row[side] = _stats(row[side], b, row["flops_per_step"], peak)
    if "ms_median" in row["mh3"] and "ms_median" in (row["torch"] or {}):
        row["ratio_torch_over_mh3"] = row["torch"]["ms_median"] / row["mh3"]["ms_median"]
    return row


def _free_torch() -> None:
    # The next (larger) batch should not run out of memory because of this one's cache.
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _line(row: dict) -> str:
    m, t = row["mh3"], row["torch"] or {}
    nan = float("nan")
    if "error" in m or "error" in t:
        errors = [f"{k}: {v['error'][:80]}" for k, v in (("mh3", m), ("torch", t)) if "error" in v]
        m = m if "ms_median" in m else {}
        t = t if "ms_median" in t else {}
        suffix = "  " + "; ".join(errors)
    else:
        suffix = ""
    mfu = f"{m['mfu']:7.1%}" if m.get("mfu") is not None else f"{'-':>7}"
    return (
        f"{row['size']:8} {row['batch']:5d} {m.get('ms_median', nan):9.1f} "
        f"{m.get('examples_per_s', nan):9.1f} {t.get('ms_median', nan):9.1f} "
        f"{t.get('examples_per_s', nan):10.1f} {row['ratio_torch_over_mh3'] or nan:6.2f} "
        f"{m.get('gflops_per_s') or nan:9.1f} {t.get('gflops_per_s') or nan:10.1f} {mfu}{suffix}"
    )


def main(argv):
    del argv
    if _PARTS.value:
        from mh3 import bench_parts

        sizes = _SIZES.value or ["minilm"]
        if any(SIZES[s][0] != "bert" for s in sizes):
            raise app.UsageError(f"--parts takes BERT sizes only, not {sizes}")
        result = [
            bench_parts.measure(size, make_config(size), int(_BATCH.value[0]) if _BATCH.value
                                else 32, _LENGTH.value, _STEPS.value if _STEPS.present else 15,
                                torch_model)
            for size in sizes
        ]  # fmt: skip
        if _WORKDIR.value:
            path = os.path.join(_WORKDIR.value, "parts.json")
            files.write_json(path, result)
            print(f"wrote {path}")
        return
    if _PROFILE.value and not _WORKDIR.value:
        raise app.UsageError("--profile writes its traces into --workdir; pass --workdir=DIR")
    # Both frameworks share one accelerator in this process: XLA takes memory as it needs it
    # instead of 75% of the device up front, which would leave PyTorch a quarter.
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    path = os.path.join(_WORKDIR.value, "results.json") if _WORKDIR.value else None
    results = benchmark(
        _SUITE.value, _SIZES.value, _BATCH.value, length=_LENGTH.value, n_steps=_STEPS.value,
        warmup=_WARMUP.value, dtype=_DTYPE.value, prng=_PRNG.value, donate=_DONATE.value,
        dropout=_DROPOUT.value, interleave=_INTERLEAVE.value,
        profile_dir=os.path.join(_WORKDIR.value, "profile") if _PROFILE.value else None,
        with_torch=_TORCH.value, peak_tflops=_PEAK.value,
        report=lambda line: print(line, flush=True),
        # Rewritten after each row: a run stopped by a time limit keeps the rows it finished.
        on_row=(lambda partial: files.write_json(path, partial)) if path else None,
    )  # fmt: skip
    if path:
        files.write_json(path, results)
        print(f"wrote {path}")


if __name__ == "__main__":
    app.run(main)
