"""Engines run a model file: a checkpoint, or (with the export stage) an artifact.

Every engine takes the network's input, a float32 (N, 3, 224, 224) batch
already normalised and cropped, and returns logits and/or the 4096-d fc7
features. The runtime above them (classification, similarity search, the
demo) never cares which file format it runs.

``load_engine(path)`` picks the engine from the file's suffix; each loader
is imported only when used, so a checkpoint never pays for onnxruntime.
"""
from __future__ import annotations

import importlib
import os
from pathlib import Path

from ..errors import CheckpointError
from .base import Engine

# suffix -> "module:factory"; the factory is called as factory(path, device=...)
LOADERS: dict[str, str] = {
    ".safetensors": "alexnet_kit.engines.checkpoint:CheckpointEngine",
    ".onnx": "alexnet_kit.engines.onnx:OnnxEngine",
    ".ts": "alexnet_kit.engines.torch_archive:TorchScriptEngine",
    ".pt2": "alexnet_kit.engines.torch_archive:ExportedProgramEngine",
}


def load_engine(path: str | os.PathLike, device: str = "cpu", **options) -> Engine:
    path = Path(path)
    target = LOADERS.get(path.suffix.lower())
    if target is None:
        known = ", ".join(sorted(LOADERS))
        raise CheckpointError(path, f"unknown model file type {path.suffix or '(no suffix)'!r} (expected one of: {known})")
    module, _, factory = target.partition(":")
    return getattr(importlib.import_module(module), factory)(path, device=device, **options)


__all__ = ["Engine", "LOADERS", "load_engine"]
