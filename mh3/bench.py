"""Training-step speed of mh3 (JAX/XLA) against HF PyTorch on the same BERT classifier.

`python -m mh3.bench [--sizes=minilm,base] [--batch=32] [--length=128] [--steps=5]`

For each size it builds the same architecture twice from a config with random weights (mh3's
Flax `BertClassifier` and HF `BertForSequenceClassification`), then times one full training
step (forward, backward, Adam update) after warm-up: mh3's pmapped `train_step` (the one every
stage uses) and PyTorch's `zero_grad / forward / backward / step`, both in this process, in
train mode (dropout on). It prints the median step time, examples/s, the ratio, and GFLOP/s
(XLA's cost analysis of the compiled step, used for both columns).
Levers to try: `--dtype=bfloat16` (bf16 matmuls on AVX-512 BF16 CPUs), `--prng=rbg` (cheaper
dropout masks), `--nodonate`, and XLA flags through the XLA_FLAGS environment variable.
"""

import functools
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import app, flags

from mh3.models.bert import BertClassifier, BertConfig
from mh3.train import parallel, steps
from mh3.train import state as state_lib

SIZES = {
    # all-MiniLM-L6-v2's shape and bert-base-uncased's shape.
    "minilm": dict(
        hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536
    ),
    "base": dict(
        hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072
    ),
}

_SIZES = flags.DEFINE_list("sizes", ["minilm", "base"], f"Model sizes: {list(SIZES)}.")
_BATCH = flags.DEFINE_integer("batch", 32, "Examples per step.")
_LENGTH = flags.DEFINE_integer("length", 128, "Tokens per example.")
_STEPS = flags.DEFINE_integer("steps", 5, "Timed steps (median reported).")
_WARMUP = flags.DEFINE_integer("warmup", 2, "Untimed steps first (compilation, allocators).")
_DTYPE = flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "mh3 compute dtype.")
_PRNG = flags.DEFINE_enum(
    "prng",
    "threefry2x32",
    ["threefry2x32", "rbg", "unsafe_rbg"],
    "JAX PRNG implementation (dropout masks).",
)
_DONATE = flags.DEFINE_bool("donate", True, "Donate the state buffers to the jitted step.")
_TORCH = flags.DEFINE_bool("torch", True, "Also time HF PyTorch.")


def _batch(batch: int, length: int, vocab: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    ids = rng.integers(1000, vocab, size=(batch, length)).astype(np.int32)
    return {
        "input_ids": ids,
        "attention_mask": np.ones_like(ids),
        "token_type_ids": np.zeros_like(ids),
        "label": rng.integers(0, 2, size=batch).astype(np.int32),
        "mask": np.ones(batch, np.float32),
    }


def _median_time(step, n_warmup: int, n_steps: int) -> float:
    for _ in range(n_warmup):
        step()
    times = []
    for _ in range(n_steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def time_mh3(
    config: BertConfig, host_batch: dict, *, dtype, donate: bool, warmup: int, n_steps: int
) -> tuple[float, float]:
    """(median seconds per step, FLOPs per step) of mh3's pmapped train_step."""
    model = BertClassifier(config, dtype=dtype)
    inputs = {k: jnp.asarray(host_batch[k][:1]) for k in ("input_ids", "attention_mask")}
    params = jax.jit(model.init)(jax.random.PRNGKey(0), inputs)["params"]
    state = state_lib.create(model.apply, params, optax.adam(1e-4), jax.random.PRNGKey(1))
    p_train = parallel.pmap(
        functools.partial(steps.train_step, loss_fn=steps.classification_loss),
        donate_argnums=(0,) if donate else (),
    )
    holder = {"state": parallel.replicate(state)}
    batch = parallel.shard(host_batch)
    compiled = p_train.lower(holder["state"], batch).compile()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list | tuple) else cost
    flops = float(cost.get("flops", 0.0)) * parallel.device_count()

    def step():
        holder["state"], metrics = p_train(holder["state"], batch)
        jax.block_until_ready(metrics["loss"])

    return _median_time(step, warmup, n_steps), flops


def time_torch(config: BertConfig, host_batch: dict, *, warmup: int, n_steps: int) -> float:
    """Median seconds per step of HF PyTorch forward + backward + Adam on the same model."""
    import torch
    import transformers

    torch.manual_seed(0)
    hf_config = transformers.BertConfig(
        vocab_size=config.vocab_size,
        hidden_size=config.hidden_size,
        num_hidden_layers=config.num_hidden_layers,
        num_attention_heads=config.num_attention_heads,
        intermediate_size=config.intermediate_size,
        hidden_act=config.hidden_act,
        num_labels=config.num_labels,
        attn_implementation="sdpa",
    )
    model = transformers.BertForSequenceClassification(hf_config).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    inputs = {
        k: torch.from_numpy(host_batch[k]).long()
        for k in ("input_ids", "attention_mask", "token_type_ids")
    }
    labels = torch.from_numpy(host_batch["label"]).long()

    def step():
        opt.zero_grad(set_to_none=True)
        loss = model(**inputs, labels=labels).loss
        loss.backward()
        opt.step()

    return _median_time(step, warmup, n_steps)


def main(argv):
    del argv
    jax.config.update("jax_default_prng_impl", _PRNG.value)
    dtype = jnp.bfloat16 if _DTYPE.value == "bfloat16" else jnp.float32
    b, length = _BATCH.value, _LENGTH.value
    print(
        f"devices: {jax.local_device_count()} x {jax.devices()[0].device_kind}; "
        f"dtype {_DTYPE.value}; prng {_PRNG.value}; donate {_DONATE.value}; "
        f"batch {b} x {length}"
    )
    header = (
        f"{'model':8} {'mh3 ms':>9} {'mh3 ex/s':>9} {'torch ms':>9} {'torch ex/s':>10} "
        f"{'ratio':>6} {'mh3 GF/s':>9} {'torch GF/s':>10}"
    )
    print(header)
    for size in _SIZES.value:
        config = BertConfig(**SIZES[size], num_labels=2)
        host = _batch(b, length, config.vocab_size)
        t_jax, flops = time_mh3(
            config,
            host,
            dtype=dtype,
            donate=_DONATE.value,
            warmup=_WARMUP.value,
            n_steps=_STEPS.value,
        )
        t_torch = (
            time_torch(config, host, warmup=_WARMUP.value, n_steps=_STEPS.value)
            if _TORCH.value
            else float("nan")
        )
        print(
            f"{size:8} {t_jax * 1e3:9.0f} {b / t_jax:9.1f} {t_torch * 1e3:9.0f} "
            f"{b / t_torch:10.1f} {t_torch / t_jax:6.2f} {flops / t_jax / 1e9:9.1f} "
            f"{flops / t_torch / 1e9:10.1f}",
            flush=True,
        )


if __name__ == "__main__":
    app.run(main)
