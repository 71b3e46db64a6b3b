"""What this CPU can do, read from /proc/cpuinfo (never guessed).

The *machine class* names a CPU model and the instruction-set flags that
decide which precisions run natively and how fast; precision measurements
are stored per machine class, so a model copied to another machine is
measured again there.
"""
from __future__ import annotations

import functools
import hashlib
import os
import platform

#: the flags that change which engine and precision win
RELEVANT_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")


@functools.lru_cache(maxsize=None)
def cpuinfo(path: str = "/proc/cpuinfo") -> tuple[str, frozenset[str]]:
    """(model name, flags) of the first processor listed; ("", {}) where there is no such file."""
    model, flags = "", frozenset()
    try:
        with open(path) as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and not model:
                    model = value.strip()
                elif key == "flags" and not flags:
                    flags = frozenset(value.split())
                if model and flags:
                    break
    except OSError:
        pass
    return model or platform.processor() or "unknown CPU", flags


def native_bf16() -> bool:
    """bf16 arithmetic in hardware: AMX tiles or AVX-512 BF16 (otherwise bf16 is emulated and slow)."""
    flags = cpuinfo()[1]
    return "amx_bf16" in flags or "avx512_bf16" in flags


def machine_class() -> dict:
    model, flags = cpuinfo()
    have = sorted(f for f in RELEVANT_FLAGS if f in flags)
    key = hashlib.sha256(f"{platform.machine()}|{model}|{' '.join(have)}".encode()).hexdigest()[:16]
    return {"key": key, "cpu": model, "arch": platform.machine(), "flags": have}


def describe() -> str:
    m = machine_class()
    return f"{m['cpu']} ({m['arch']}; {' '.join(m['flags']) or 'no relevant flags'})"


def usable_cores() -> int:
    """The cores this process may use (``sched_getaffinity``: a container or ``taskset`` limit is respected)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1
