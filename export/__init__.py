"""The export stage: a checkpoint becomes a self-contained, verified artifact.

    alexnet-kit export model.safetensors --format onnx          # model.onnx
    alexnet-kit export model.safetensors --format onnx --int8   # model.int8.onnx (CPU serving)
    alexnet-kit export model.safetensors --format torchscript   # model.ts
    alexnet-kit export model.safetensors --format pt2           # model.pt2 (torch.export)

Every artifact computes ``(logits, fc7 features)`` in one pass, so one file
serves both classification and similarity search, and embeds the
checkpoint's :class:`~alexnet_kit.meta.ModelMeta` and fingerprint, so the
runtime needs no other file. Export writes to a temporary path, reloads it
with the format's own runtime, compares it with the PyTorch model on real
photos (:mod:`.verify`) and only then moves it into place.
"""
from __future__ import annotations

from .api import FORMATS, ExportReport, default_output, export_checkpoint

__all__ = ["FORMATS", "ExportReport", "default_output", "export_checkpoint"]
