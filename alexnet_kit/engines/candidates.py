"""What can run a model file on this machine: the candidate engines and precisions, and the reference.

* an fp32 ``.onnx``: onnxruntime fp32, OpenVINO fp32, OpenVINO bf16 (only
  where /proc/cpuinfo shows ``amx_bf16`` or ``avx512_bf16``), and, when the
  int8 export ``X.int8.onnx`` lies beside it, onnxruntime and OpenVINO on it;
* a checkpoint: torch fp32, and torch bf16 autocast on a CPU with native bf16;
* ``.ts`` / ``.pt2``: torch fp32.

fp32 on onnxruntime (torch for a checkpoint) is the reference the others are
measured against.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

from . import cpu
from .precision import Precision

ENGINES = ("onnxruntime", "openvino", "torch")


@dataclass(frozen=True)
class Candidate:
    engine: str
    precision: Precision
    path: Path  # the file this candidate runs (the int8 export for int8)

    @property
    def name(self) -> str:
        return f"{self.engine} {self.precision}"


def engine_available(name: str) -> bool:
    """The runtime imports here (a broken or absent install counts as absent)."""
    module = {"onnxruntime": "onnxruntime", "openvino": "openvino", "torch": "torch"}[name]
    try:
        importlib.import_module(module)
    except Exception:  # ImportError, or a half-installed package failing at import
        return False
    return True


def model_files(model: Path) -> tuple[Path | None, Path | None]:
    """(fp32 file, int8 file) of an ONNX model: the file given and its sibling by export's naming."""
    name = model.name
    if name.lower().endswith(".int8.onnx"):
        fp32 = model.with_name(name[: -len(".int8.onnx")] + ".onnx")
        return (fp32 if fp32.is_file() else None), model
    int8 = model.with_name(model.name[: -len(model.suffix)] + ".int8.onnx")
    return model, (int8 if int8.is_file() else None)


def is_int8_export(model: Path) -> bool:
    return model.name.lower().endswith(".int8.onnx")


def candidates(model: Path) -> tuple[list[Candidate], Candidate | None]:
    """Everything that can run ``model`` here, and the fp32 reference (None when there is no fp32 file)."""
    bf16 = cpu.native_bf16()
    if model.suffix.lower() == ".onnx":
        fp32, int8 = model_files(model)
        out = []
        engines = [e for e in ("onnxruntime", "openvino") if engine_available(e)]
        if fp32 is not None:
            out += [Candidate(e, Precision.FP32, fp32) for e in engines]
            if bf16 and "openvino" in engines:
                out.append(Candidate("openvino", Precision.BF16, fp32))
        if int8 is not None:
            out += [Candidate(e, Precision.INT8, int8) for e in engines]
        ref = next((c for c in out if c.precision is Precision.FP32), None)
        return out, ref
    out = [Candidate("torch", Precision.FP32, model)]
    if model.suffix.lower() == ".safetensors" and bf16:
        out.append(Candidate("torch", Precision.BF16, model))
    return out, out[0]
