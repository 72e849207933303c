"""mh3.bench at tiny sizes (hidden 32, 2 layers): the command writes results.json with the
fields a later comparison needs, for the CPU suite and for the GPU suite run on the CPU.

Only the fields and their consistency are checked, never the speed (timings on a shared CI
machine mean nothing).
"""

import json
import os
import statistics
import subprocess
import sys
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mh3 import bench

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The command at one BERT size; the GPU suite's test below times the AST family (in-process).
TINY = ["--sizes=tiny", "--batch=4", "--length=16", "--steps=2", "--warmup=1"]


def _check_row(row: dict, *, batch: int, with_torch: bool, mfu: bool) -> None:
    m = row["mh3"]
    assert len(m["ms_samples"]) == 2 and m["ms_median"] == statistics.median(m["ms_samples"])
    assert m["examples_per_s"] == pytest.approx(batch / (m["ms_median"] / 1e3))
    assert row["flops_per_step"] > 0 and row["flops_source"] == bench.FLOPS_XLA
    assert m["gflops_per_s"] == pytest.approx(row["flops_per_step"] / m["ms_median"] / 1e6)
    assert (m["mfu"] is not None) == mfu
    if with_torch:
        t = row["torch"]
        assert len(t["ms_samples"]) == 2 and t["examples_per_s"] > 0
        assert row["ratio_torch_over_mh3"] == pytest.approx(t["ms_median"] / m["ms_median"])
    else:
        assert row["torch"] is None and row["ratio_torch_over_mh3"] is None


class FakeClock:
    """Stands in for bench's clock, advanced only by the steps it makes, so that the timing's
    bookkeeping is checked exactly (real steps' times on a shared machine mean nothing)."""

    def __init__(self):
        self.now, self.calls = 0.0, []

    def perf_counter(self) -> float:
        return self.now

    def step(self, side: str, *seconds: float, fail_at: int = 0):
        """A step of `side` taking `seconds` in turn (cycled); its call number `fail_at`
        (from 1) raises an out-of-memory error."""

        def run():
            self.calls.append(side)
            if self.calls.count(side) == fail_at:
                raise RuntimeError("RESOURCE_EXHAUSTED: out of memory")
            self.now += seconds[(self.calls.count(side) - 1) % len(seconds)]

        return run


def _fake_sides(monkeypatch, clock, mh3=None, torch=None):
    """bench builds these steps instead of the real ones: a callable, or an exception to
    raise while building."""

    def build(made):
        def builder(*args, **kwargs):
            if isinstance(made, Exception):
                raise made
            return made

        return builder

    monkeypatch.setattr(bench, "time", types.SimpleNamespace(perf_counter=clock.perf_counter))
    monkeypatch.setattr(
        bench, "build_mh3", build(mh3 if isinstance(mh3, Exception) else (mh3, 1e9, "x"))
    )
    monkeypatch.setattr(bench, "build_torch", build(torch))


def test_cpu_suite_command_writes_results_json(tmp_path):
    """With --profile and --interleave too: both sides' traces on disk and their costliest ops
    in the row (the GPU suite's test below times one side after the other)."""
    cmd = [sys.executable, "-m", "mh3.bench", *TINY, "--interleave", "--profile",
           f"--workdir={tmp_path}"]  # fmt: skip
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "mh3 ms" in done.stdout and "tiny" in done.stdout  # the printed table
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["suite"] == "cpu" and results["dtype"] == "float32"
    assert results["prng"] == "rbg"  # the default, as in training (configs/common.py)
    assert results["interleave"] is True
    assert results["host"]["cpu_model"] and isinstance(results["host"]["cpu_flags"], list)
    assert {"jax", "jaxlib", "torch", "transformers"} <= set(results["versions"])
    assert results["versions"]["torch"] and results["versions"]["jax"]
    assert "--xla_force_host_platform_device_count=4" in results["XLA_FLAGS"]  # conftest's
    assert results["devices"]["count"] == 4 and results["peak_flops_per_device"] is None
    assert [(r["size"], r["family"], r["batch"]) for r in results["results"]] == [
        ("tiny", "bert", 4)
    ]
    assert results["results"][0]["input_shape"] == [4, 16]
    for row in results["results"]:
        _check_row(row, batch=4, with_torch=True, mfu=False)
    profile = results["results"][0]["profile"]
    assert profile["trace_dir"] == str(tmp_path / "profile" / "tiny-4")
    assert list((tmp_path / "profile" / "tiny-4" / "mh3").rglob("perfetto_trace.json.gz"))
    assert json.loads((tmp_path / "profile" / "tiny-4" / "torch.json").read_text())
    # XLA's ops as the CPU runtime ran them (4 fake devices on this machine's cores: mostly
    # the gradients' all-reduce and waiting), and PyTorch's aten ops, its matmuls among them.
    xla_kinds = ("all-reduce", "dot", "dot_general", "copy")
    assert any(o["op"] in xla_kinds or o["op"].endswith("fusion") for o in profile["mh3"])
    assert "aten::mm" in [o["op"] for o in profile["torch"]]
    for ops in (profile["mh3"], profile["torch"]):
        assert 3 <= len(ops) <= 12
        assert all(o["ms_per_step"] > 0 and 0 < o["share"] <= 1 for o in ops)
        assert [o["ms_per_step"] for o in ops] == sorted(
            (o["ms_per_step"] for o in ops), reverse=True
        )
    assert "aten::mm" in done.stdout  # the printed profile table
    no_dir = subprocess.run(cmd[:-1], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert no_dir.returncode != 0 and "pass --workdir" in no_dir.stderr


def test_a_failing_profiler_keeps_the_rows_times(monkeypatch, tmp_path):
    from mh3 import bench_profile

    def no_cupti(step, trace_dir):
        raise RuntimeError("no CUPTI")

    clock = FakeClock()
    _fake_sides(monkeypatch, clock, mh3=clock.step("mh3", 0.002), torch=clock.step("torch", 0.004))
    monkeypatch.setattr(bench_profile, "jax_ops", no_cupti)
    monkeypatch.setattr(bench_profile, "torch_ops", lambda step, path: [
        {"op": "gemm", "ms_per_step": 3.0, "share": 0.75}])  # fmt: skip
    config = bench.make_config("tiny")
    row = bench._measure("tiny", config, 4, 16, None, True, dtype="float32", donate=True,
                         warmup=0, n_steps=1, profile_dir=str(tmp_path))  # fmt: skip
    assert row["mh3"]["ms_median"] == pytest.approx(2.0) and row["ratio_torch_over_mh3"] == 2.0
    assert row["profile"]["mh3"] == {"error": "RuntimeError: no CUPTI"}
    lines = bench_profile.lines(row["profile"])
    assert "torch op" in lines[0] and "gemm" in lines[1] and "mh3 op" not in lines[0]
    assert lines[-1] == "  mh3 profile: RuntimeError: no CUPTI"


def test_profile_self_times_count_nested_spans_once():
    from mh3 import bench_profile

    spans = [  # one thread: step [0, 100) holds a [10, 40) holding b [20, 30), then b [50, 70)
        {"pid": 1, "tid": 1, "name": "step", "ts": 0, "dur": 100},
        {"pid": 1, "tid": 1, "name": "a", "ts": 10, "dur": 30},
        {"pid": 1, "tid": 1, "name": "b", "ts": 20, "dur": 10},
        {"pid": 1, "tid": 1, "name": "b", "ts": 50, "dur": 20},
        {"pid": 1, "tid": 2, "name": "b", "ts": 15, "dur": 5},  # another thread, overlapping
    ]
    assert bench_profile._self_times(spans) == {"step": 50, "a": 20, "b": 35}
    top = bench_profile._top(bench_profile._self_times(spans), steps=5, top=2)
    assert [o["op"] for o in top] == ["step", "b"]
    assert [o["ms_per_step"] for o in top] == pytest.approx([0.01, 0.007])
    assert [o["share"] for o in top] == pytest.approx([50 / 105, 35 / 105])


def test_gpu_suite_runs_on_cpu_with_bf16_and_mfu():
    before = jax.config.jax_default_prng_impl
    lines, rows_so_far = [], []
    # The AST family at two batches (the command's test above times BERT): compiles are slow.
    results = bench.benchmark(
        "gpu", ["ast-tiny"], ["4", "8"], length=16, n_steps=2, warmup=1,
        prng="threefry2x32", peak_tflops=0.5, report=lines.append,
        on_row=lambda partial: rows_so_far.append([r["batch"] for r in partial["results"]]),
    )  # fmt: skip
    assert rows_so_far == [[4], [4, 8]]  # what main rewrites results.json with, row by row
    assert results["suite"] == "gpu" and results["dtype"] == "bfloat16"
    assert results["torch_autocast_bf16"] is True and results["prng"] == "threefry2x32"
    assert results["peak_flops_per_device"] == 0.5e12
    assert [(r["size"], r["family"], r["batch"]) for r in results["results"]] == [
        ("ast-tiny", "ast", 4),
        ("ast-tiny", "ast", 8),
    ]
    assert results["results"][0]["input_shape"] == [4, 64, 32]  # frames x mel bins
    assert len(lines) == 2 + 2 and "MFU" in lines[1]
    for row in results["results"]:
        _check_row(row, batch=row["batch"], with_torch=True, mfu=True)
        m = row["mh3"]
        assert m["mfu"] == pytest.approx(m["gflops_per_s"] * 1e9 / (0.5e12 * 4))
    json.dumps(results)  # what main writes must serialise
    assert jax.config.jax_default_prng_impl == before  # the caller's PRNG is restored
    with pytest.raises(KeyError):
        bench.benchmark("tpu")


def test_matmul_flops_counts_every_product():
    """Products by hand: a batched dot, a strided convolution, a scan's body times its length,
    a cond's costlier branch; elementwise work counts nothing."""
    x, w = jnp.ones((3, 5, 7)), jnp.ones((7, 11))
    image, kernel = jnp.ones((2, 4, 20, 20)), jnp.ones((6, 4, 3, 3))  # NCHW, OIHW

    def fn(x, w, image, kernel):
        y = jnp.tanh(jnp.einsum("bij,jk->bik", x, w))  # 3*5*11 outputs, 7 products each
        feat = jax.lax.conv_general_dilated(image, kernel, (2, 2), "VALID")  # 2x6x9x9 outputs
        h, _ = jax.lax.scan(lambda h, _: (h @ w.T @ w, None), y[0], None, length=4)
        small = jax.lax.cond(x.sum() > 0, lambda v: v * 2, lambda v: v @ jnp.ones((11, 11)), h)
        return y.sum() + feat.sum() + small.sum()

    want = (
        2 * 3 * 5 * 11 * 7
        + 2 * (2 * 6 * 9 * 9) * (4 * 3 * 3)
        + 4 * (2 * 5 * 7 * 11 + 2 * 5 * 11 * 7)
        + 2 * 5 * 11 * 11
    )
    assert bench.matmul_flops(jax.make_jaxpr(fn)(x, w, image, kernel)) == want
    # Forward + backward: the products' count triples (two gradient products per product).
    grad = jax.make_jaxpr(jax.grad(lambda x, w: jnp.sum(x @ w), argnums=(0, 1)))(x[0], w)
    assert bench.matmul_flops(grad) == 3 * 2 * 5 * 7 * 11


def test_step_flops_without_xla_counts_the_steps_products(monkeypatch):
    """jax 0.11.2 on an H200 gave no FLOPs from the cost analysis (flops_per_step 0.0, no
    GF/s, no MFU): the step's products are counted from its jaxpr instead. Simulated here by
    the same empty answer; on this tiny step (hidden 32) the products are 60-100% of XLA's
    count, which also has the elementwise work."""
    import optax

    from mh3.models.bert import BertClassifier
    from mh3.train import parallel
    from mh3.train import state as state_lib

    config = bench.make_config("tiny")
    host_batch = bench.make_batch(config, 4 * parallel.device_count(), 16)
    model = BertClassifier(config)
    inputs = {k: host_batch[k][:1] for k in ("input_ids", "attention_mask")}
    params = model.init(jax.random.PRNGKey(0), inputs)["params"]
    state = state_lib.create(model.apply, params, optax.adam(1e-4), jax.random.PRNGKey(1))
    state, batch = parallel.replicate(state), parallel.shard(host_batch)
    xla, source = bench.step_flops(state, batch)
    assert source == bench.FLOPS_XLA and xla > 0
    monkeypatch.setattr(jax.stages.Lowered, "cost_analysis", lambda self: {"flops": 0.0})
    products, source = bench.step_flops(state, batch)
    assert source == bench.FLOPS_MATMUL
    assert 0.6 * xla < products < xla


@pytest.mark.parametrize("dropout, rate", [(True, 0.1), (False, 0.0)])
def test_dropout_flag_reaches_both_sides(monkeypatch, dropout, rate):
    """`--nodropout` turns BERT's dropout off in mh3's model and in the PyTorch twin alike."""
    seen = {}

    def mh3_side(config, *args, **kwargs):
        seen["mh3"] = config
        return lambda: None, 1.0, "x"

    def torch_side(config, *args, **kwargs):
        seen["torch"] = bench.torch_model(config).config
        return lambda: None

    monkeypatch.setattr(bench, "build_mh3", mh3_side)
    monkeypatch.setattr(bench, "build_torch", torch_side)
    results = bench.benchmark(
        "cpu", ["tiny"], ["4"], length=16, n_steps=1, warmup=0, dropout=dropout, report=len
    )
    assert results["dropout"] is dropout
    for side in ("mh3", "torch"):
        assert seen[side].hidden_dropout_prob == seen[side].attention_probs_dropout_prob == rate


def test_peak_table():
    assert bench.peak_flops("NVIDIA H100 80GB HBM3") == 989e12
    assert bench.peak_flops("NVIDIA H100 PCIe") == 756e12
    assert bench.peak_flops("NVIDIA H200") == 989e12
    assert bench.peak_flops("NVIDIA A100-SXM4-80GB") == 312e12
    assert bench.peak_flops("cpu") is None
    assert bench.peak_flops("NVIDIA H200", peak_tflops=500) == 500e12


@pytest.mark.parametrize("interleave", [True, False])
def test_a_failing_side_is_recorded_and_the_suite_goes_on(monkeypatch, interleave):
    config = bench.make_config("tiny")
    kw = dict(dtype="bfloat16", donate=True, warmup=0, n_steps=2, interleave=interleave)
    oom = RuntimeError("RESOURCE_EXHAUSTED: out of memory")
    error = {"error": "RuntimeError: RESOURCE_EXHAUSTED: out of memory"}
    clock = FakeClock()
    _fake_sides(monkeypatch, clock, mh3=clock.step("mh3", 0.002, 0.004), torch=oom)
    row = bench._measure("tiny", config, 8, 16, 1e12, True, **kw)  # PyTorch fails to build
    assert row["mh3"]["ms_samples"] == pytest.approx([2.0, 4.0]) and row["flops_per_step"] == 1e9
    assert row["mh3"]["ms_median"] == pytest.approx(3.0)
    assert row["mh3"]["mfu"] == pytest.approx(1e9 / 0.003 / (1e12 * jax.local_device_count()))
    assert row["torch"] == error and row["ratio_torch_over_mh3"] is None
    assert "torch: RuntimeError" in bench._line(row)
    clock = FakeClock()  # PyTorch's second step runs out of memory: mh3's steps go on
    _fake_sides(monkeypatch, clock, mh3=clock.step("mh3", 0.002),
                torch=clock.step("torch", 0.004, fail_at=2))  # fmt: skip
    row = bench._measure("tiny", config, 8, 16, 1e12, True, **kw)
    assert row["torch"] == error and row["mh3"]["ms_samples"] == pytest.approx([2.0, 2.0])
    _fake_sides(monkeypatch, clock, mh3=oom)
    row = bench._measure("tiny", config, 8, 16, None, False, **kw)
    assert row["mh3"] == error and row["torch"] is None and "mh3: RuntimeError" in bench._line(row)


@pytest.mark.parametrize("interleave", [True, False])
def test_sides_alternate_step_by_step_when_interleaved(monkeypatch, interleave):
    """Interleaved: torch, mh3, torch, mh3, ... so both see the same spell of a shared machine;
    otherwise (the default) PyTorch's steps, then mh3's. Warm-up calls are not timed."""
    clock = FakeClock()
    _fake_sides(monkeypatch, clock, mh3=clock.step("mh3", 0.001, 0.002, 0.003),
                torch=clock.step("torch", 0.010, 0.020, 0.030))  # fmt: skip
    row = bench._measure("tiny", bench.make_config("tiny"), 4, 16, None, True, dtype="float32",
                         donate=True, warmup=1, n_steps=2, interleave=interleave)  # fmt: skip
    want = ["torch", "mh3"] * 3 if interleave else ["torch"] * 3 + ["mh3"] * 3
    assert clock.calls == want
    assert row["mh3"]["ms_samples"] == pytest.approx([2.0, 3.0])  # the first call was warm-up
    assert row["torch"]["ms_samples"] == pytest.approx([20.0, 30.0])
    assert row["ratio_torch_over_mh3"] == pytest.approx(10.0)
    results = bench.benchmark("cpu", ["tiny"], ["4"], n_steps=1, warmup=0, report=len)
    assert results["interleave"] is False  # the default (the command's test interleaves)
    assert bench.SUITES["gpu"]["interleave"] is False


@pytest.mark.parametrize(
    "env, want",
    [
        ({}, "--xla_cpu_experimental_ynn_fusion_type="),  # mh3's default: no YNN fusions
        ({"XLA_FLAGS": "--xla_cpu_experimental_ynn_fusion_type=dot"},
         "--xla_cpu_experimental_ynn_fusion_type=dot"),  # the user's choice is kept
        ({"MH3_XLA_DEFAULTS": "0"}, ""),  # opted out
    ],
)  # fmt: skip
def test_importing_mh3_sets_the_faster_xla_cpu_default(env, want):
    base = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "MH3_XLA_DEFAULTS")}
    script = "import os, mh3; print(os.environ.get('XLA_FLAGS', ''))"
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=dict(base, **env),
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == want


def test_parts_command_times_each_part_on_both_sides(tmp_path):
    """`--parts`: every part timed on both sides, the fastest sample kept, the step estimate
    is embeddings + layers x layer + adam, the matmul floor layers x the dense layers'
    matmuls, and parts.json holds the host and the samples."""
    cmd = [sys.executable, "-m", "mh3.bench", "--parts", "--sizes=tiny", "--batch=4",
           "--length=16", "--steps=2", f"--workdir={tmp_path}"]  # fmt: skip
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "step estimate" in done.stdout  # the printed table
    [entry] = json.loads((tmp_path / "parts.json").read_text())
    assert entry["size"] == "tiny" and entry["batch"] == 4 and entry["length"] == 16
    assert entry["host"]["cpu_model"] and entry["versions"]["torch"]
    parts = ["embeddings", "attention", "mlp", "layer", "adam", "dense matmuls"]
    assert list(entry["samples_ms"]) == parts
    for part in parts:
        for side in ("mh3", "torch"):
            samples = entry["samples_ms"][part][side]
            assert len(samples) == 2 and entry["best_ms"][part][side] == min(samples) > 0
    best, layers = entry["best_ms"], entry["config"]["num_hidden_layers"]
    for side in ("mh3", "torch"):
        want = best["embeddings"][side] + layers * best["layer"][side] + best["adam"][side]
        assert best["step estimate"][side] == pytest.approx(want)
        assert best["matmul floor"][side] == pytest.approx(layers * best["dense matmuls"][side])
    wrong = subprocess.run([*cmd[:4], "--sizes=ast-tiny"], cwd=ROOT, capture_output=True, text=True)
    assert wrong.returncode != 0 and "BERT sizes only" in wrong.stderr
    unknown = subprocess.run([*cmd[:4], "--sizes=nope"], cwd=ROOT, capture_output=True, text=True)
    assert unknown.returncode != 0 and "unknown size" in unknown.stderr
    assert "Traceback" not in unknown.stderr


def test_parts_dense_matmuls_are_the_same_products_on_both_sides():
    """The matmul floor compares like with like: both sides compute the same 18 products."""
    import torch

    from mh3 import bench_parts

    cfg = bench.make_config("tiny")
    xs, ws, dys = bench_parts._dense_operands(cfg, rows=8)
    ours = bench_parts._dense_products(*[[jnp.asarray(a) for a in g] for g in (xs, ws, dys)])
    theirs = bench_parts._dense_products(*[[torch.from_numpy(a) for a in g] for g in (xs, ws, dys)])
    assert len(ours) == len(theirs) == 18
    assert ours[1].shape == (cfg.hidden_size, cfg.hidden_size)  # a kernel gradient, x^T dy
    for a, b in zip(ours, theirs, strict=True):
        np.testing.assert_allclose(np.asarray(a), b.numpy(), rtol=1e-4, atol=1e-4)
