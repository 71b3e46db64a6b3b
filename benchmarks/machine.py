"""The machine a benchmark ran on: every script here prints it with its numbers."""
from __future__ import annotations

import importlib
import os
import platform


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def describe(*packages: str) -> str:
    """CPU, cores, load average, Python, torch (threads), and the versions of ``packages``."""
    import torch

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    parts = [
        cpu_model(), f"{os.cpu_count()} cores", f"load average {load:.1f}",
        f"Python {platform.python_version()}", f"torch {torch.__version__} ({torch.get_num_threads()} threads)",
    ]
    for name in packages:
        module = importlib.import_module(name)
        parts.append(f"{name} {getattr(module, '__version__', '?')}")
    if torch.cuda.is_available():
        parts.append(f"GPU {torch.cuda.get_device_name()}")
    return ", ".join(parts)
