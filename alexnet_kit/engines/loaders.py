"""Opening an engine on a file: by its suffix (the file's own engine), or as a chosen engine and precision.

The onnxruntime and OpenVINO engines' modules are imported only when used, so
a checkpoint never pays for those runtimes.
"""
from __future__ import annotations

import importlib
import os
from pathlib import Path

import torch

from ..errors import CheckpointError
from .base import Engine
from .cpu import usable_cores
from .precision import Precision
from .torch_checkpoint import TorchCheckpointEngine

# suffix -> "module:factory"; the factory is called as factory(path, device=...)
LOADERS: dict[str, str] = {
    ".safetensors": "alexnet_kit.engines.torch_checkpoint:TorchCheckpointEngine",
    ".onnx": "alexnet_kit.engines.onnx:OnnxEngine",
    ".ts": "alexnet_kit.engines.torch_archive:TorchScriptEngine",
    ".pt2": "alexnet_kit.engines.torch_archive:ExportedProgramEngine",
}


def load_engine(path: str | os.PathLike, device: str = "cpu", **options) -> Engine:
    """The file's own engine, picked by its suffix."""
    path = Path(path)
    target = LOADERS.get(path.suffix.lower())
    if target is None:
        known = ", ".join(sorted(LOADERS))
        raise CheckpointError(path, f"unknown model file type {path.suffix or '(no suffix)'!r} (expected one of: {known})")
    module, _, factory = target.partition(":")
    return getattr(importlib.import_module(module), factory)(path, device=device, **options)


def feature_layers_of(path: str | os.PathLike) -> tuple[str, ...]:
    """The named layers the engine of ``path``'s kind computes, without opening it: every one for a
    checkpoint, fc7 and fc8 for an artifact (whichever engine runs it)."""
    target = LOADERS.get(Path(path).suffix.lower())
    if target is None:
        return Engine.feature_layers  # load_engine says what is wrong with the file
    module, _, factory = target.partition(":")
    return getattr(importlib.import_module(module), factory).feature_layers


def open_path(engine: str, precision: Precision, path: Path, device: str = "cpu", threads: int | None = None,
              batch: int = 80) -> Engine:
    """``path`` run by ``engine`` in ``precision`` (an engine refuses a precision it cannot run)."""
    if engine == "openvino":
        from .openvino import OpenVinoEngine  # defers openvino

        return OpenVinoEngine(path, device=device, precision=precision, threads=threads, batch=batch)
    if engine == "onnxruntime":
        from .onnx import OnnxEngine  # defers onnxruntime

        if threads is None and torch.device(device).type == "cpu":
            threads = usable_cores()
        return OnnxEngine(path, device=device, threads=threads, precision=precision)
    if path.suffix.lower() == ".safetensors":
        return TorchCheckpointEngine(path, device=device, precision=precision)
    return load_engine(path, device=device)
