"""What machine a measurement ran on: CPU model and flags, cores, load, library versions.

Timings mean little without the machine beside them, so every command that reports speed
(`python -m mh3.bench`, `python -m mh3.audio.speed`) records the host with these functions.
They live here rather than in either command because both commands define absl flags at
import time, some with the same names (`--workdir`), so neither can import the other. Only
the standard library is imported at module level; `versions` imports the libraries it names.
"""

import os
import platform


def cpu_model_and_flags() -> tuple[str, list[str]]:
    """The CPU's model name and feature flags from /proc/cpuinfo (Linux; x86 `flags`, Arm
    `Features`), else the platform's processor or machine name and no flags."""
    model, cpu_flags = platform.processor() or platform.machine(), []
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and value.strip():
                    model = value.strip()
                elif key.strip() in ("flags", "Features") and not cpu_flags:
                    cpu_flags = value.split()
    except OSError:
        pass
    return model, cpu_flags


def cpu_model() -> str:
    """The CPU's model name, e.g. 'AMD EPYC 9R14 96-Core Processor'."""
    return cpu_model_and_flags()[0]


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def host_info() -> dict:
    """CPU model, flags and core count (/proc/cpuinfo on Linux), for comparing machines."""
    model, cpu_flags = cpu_model_and_flags()
    return {
        "cpu_model": model,
        "cpu_flags": cpu_flags,
        "cpu_count": os.cpu_count(),
        "affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "platform": platform.platform(),
    }


def versions(with_torch: bool) -> dict:
    """Python, JAX, jaxlib and Flax versions; torch and transformers (and the CUDA device
    torch sees) when `with_torch`, else None for those two."""
    import flax
    import jax
    import jaxlib

    out = {"python": platform.python_version(), "jax": jax.__version__}
    out.update(jaxlib=jaxlib.__version__, flax=flax.__version__, torch=None, transformers=None)
    if with_torch:
        import torch
        import transformers

        out.update(torch=torch.__version__, transformers=transformers.__version__)
        out["torch_cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return out
