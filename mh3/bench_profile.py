"""What a training step's time goes to, op by op, in mh3 and in PyTorch.

    python -m mh3.bench --profile --workdir=DIR [--suite=gpu --sizes=base --batch=32]

After timing a row, mh3.bench runs PROFILE_STEPS more steps of each side under its own
profiler and keeps both traces: jax.profiler's Perfetto trace in
`DIR/profile/<size>-<batch>/mh3/` (open it at ui.perfetto.dev, or in TensorBoard's profile
plugin) and torch.profiler's Chrome trace `DIR/profile/<size>-<batch>/torch.json`. From each
trace it sums every op's self time (its span less the spans nested in it on the same thread)
and prints and saves (the row's `profile`) the costliest ops per step, XLA's summed by kind
(`copy.539` and `copy.498` count as `copy`):

- on a GPU, the device's work: XLA's HLO ops (the trace's "XLA Ops" line; they are the fusion
  names of an `XLA_FLAGS=--xla_dump_to=DIR` dump), else its CUDA kernels; PyTorch's CUDA
  kernels and copies;
- on the CPU, PyTorch's aten ops and XLA's ops as its runtime's worker threads ran them (with
  `ThunkExecutor::Execute`, the runtime's own time between them). XLA's traced spans cover
  only part of the step there (the share is of what was traced): at MiniLM size about 1.1 s
  of 2.4 s per step on 2 cores, the work a matmul hands to other threads being untraced.
"""

import collections
import glob
import gzip
import json
import os
import re

PROFILE_STEPS = 3
TOP = 12
# torch.profiler's Chrome-trace categories of the device's own work.
_TORCH_DEVICE = ("kernel", "gpu_memcpy", "gpu_memset")


def jax_ops(step, trace_dir: str, steps: int = PROFILE_STEPS, top: int = TOP) -> list[dict]:
    """Trace `steps` calls of `step` (blocking) with jax.profiler into `trace_dir`; the
    costliest ops by self time per step."""
    import jax

    with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
        for _ in range(steps):
            step()
    paths = glob.glob(os.path.join(trace_dir, "**", "perfetto_trace.json.gz"), recursive=True)
    with gzip.open(max(paths, key=os.path.getmtime)) as f:
        events = json.load(f)
    # XLA numbers each instance (copy.539, loop_add_fusion.3): summed by kind, the table says
    # where the time goes; the trace on disk keeps the instances.
    kinds = collections.Counter()
    for name, t in _self_times(_jax_spans(events)).items():
        kinds[re.sub(r"\.\d+$", "", name)] += t
    return _top(kinds, steps, top)


def _jax_spans(events) -> list[dict]:
    """The spans of a jax Perfetto trace worth summing: a device's op line where there is a
    device (one line: its module, op and kernel lines cover the same time), else the CPU
    runtime's worker threads (XLA's ops, 'XLAEigen'), else every host span but the Python frames
    of jax's own tracer (names starting with '$')."""
    events = events["traceEvents"] if isinstance(events, dict) else events
    meta = [e for e in events if e.get("ph") == "M"]
    processes = {e["pid"]: e["args"]["name"] for e in meta if e["name"] == "process_name"}
    threads = {
        (e["pid"], e.get("tid")): e["args"]["name"] for e in meta if e["name"] == "thread_name"
    }
    spans = [e for e in events if e.get("ph") == "X" and "dur" in e]
    on_device = [e for e in spans if "/device:" in processes.get(e["pid"], "")]
    lines = ("XLA Ops", "Stream") if on_device else ("XLAEigen",)
    for line in lines:
        chosen = [
            e for e in on_device or spans if line in threads.get((e["pid"], e.get("tid")), "")
        ]
        if chosen:
            return chosen
    return on_device or [e for e in spans if not e["name"].startswith("$")]


def torch_ops(step, trace_path: str, steps: int = PROFILE_STEPS, top: int = TOP) -> list[dict]:
    """Trace `steps` calls of `step` with torch.profiler into the Chrome trace `trace_path`;
    the costliest ops by self time per step (CUDA kernels on a GPU, aten ops on the CPU)."""
    import torch

    cuda = torch.cuda.is_available()
    activities = [torch.profiler.ProfilerActivity.CPU]
    if cuda:
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof:
        for _ in range(steps):
            step()
    prof.export_chrome_trace(trace_path)
    with open(trace_path) as f:
        events = json.load(f)
    events = events["traceEvents"] if isinstance(events, dict) else events
    wanted = _TORCH_DEVICE if cuda else ("cpu_op",)
    spans = [e for e in events if e.get("ph") == "X" and e.get("cat") in wanted]
    return _top(_self_times(spans), steps, top)


def _self_times(spans: list[dict]) -> collections.Counter:
    """name -> summed self time (microseconds): each span's duration less the spans nested in
    it on the same thread, so that a parent and its children are not counted twice."""
    totals = collections.Counter()
    threads = collections.defaultdict(list)
    for e in spans:
        threads[(e["pid"], e.get("tid"))].append(e)
    for thread in threads.values():
        thread.sort(key=lambda e: (float(e["ts"]), -float(e["dur"])))
        open_spans = []  # (end, name), innermost last
        for e in thread:
            start, duration = float(e["ts"]), float(e["dur"])
            while open_spans and open_spans[-1][0] <= start:
                open_spans.pop()
            totals[e["name"]] += duration
            if open_spans:
                totals[open_spans[-1][1]] -= duration
            open_spans.append((start + duration, e["name"]))
    return totals


def _top(totals: collections.Counter, steps: int, top: int) -> list[dict]:
    whole = sum(t for t in totals.values() if t > 0) or 1.0
    return [
        {"op": name, "ms_per_step": t / 1e3 / steps, "share": t / whole}
        for name, t in totals.most_common(top)
    ]


def lines(profile: dict) -> list[str]:
    """The printed table of one row's profile: each side's costliest ops, side by side, and
    the error of a side whose profiler failed."""
    sides = [s for s in ("mh3", "torch") if isinstance(profile.get(s), list)]
    out = ["  " + "   ".join(f"{s + ' op':48} {'ms/step':>8} {'share':>6}" for s in sides)]
    for i in range(max(len(profile[s]) for s in sides) if sides else 0):
        cells = []
        for s in sides:
            if i < len(profile[s]):
                op = profile[s][i]
                cells.append(f"{op['op'][:48]:48} {op['ms_per_step']:8.2f} {op['share']:6.1%}")
            else:
                cells.append(" " * 64)
        out.append("  " + "   ".join(cells))
    errors = [f"  {s} profile: {p['error']}" for s, p in profile.items() if isinstance(p, dict)]
    return out + errors
