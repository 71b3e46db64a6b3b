"""ONNX through the dynamo exporter: opset 18, dynamic batch, one file.

``torch.onnx.export(..., dynamo=True)`` is the supported path in torch 2.13
(the TorchScript-based exporter is deprecated). The paper's model is 244 MB,
under protobuf's 2 GB limit, so ``external_data=False`` keeps weights and
graph in one file that can be copied around alone.
"""
from __future__ import annotations

import contextlib
import io
import os
import warnings

import torch

from alexnet_kit.engines.artifact import INPUT, KEY, OUTPUTS, Envelope
from alexnet_kit.lrn import LocalResponseNorm
from alexnet_kit.model import AlexNet

from .graph import LogitsAndFeatures, example_input

OPSET = 18


def export_onnx(model: AlexNet, envelope: Envelope, path: str | os.PathLike) -> None:
    import onnx  # defers onnx, an optional dependency

    wrapper = LogitsAndFeatures(model)
    norms = [m for m in model.modules() if isinstance(m, LocalResponseNorm)]
    for m in norms:  # see LocalResponseNorm.sqrt_power: measured faster in onnxruntime
        m.sqrt_power = True
    try:
        program = _export(wrapper, model)
    finally:
        for m in norms:
            del m.sqrt_power
    proto = program.model_proto
    set_metadata(proto, envelope)
    onnx.save_model(proto, os.fspath(path), save_as_external_data=False)


def _export(wrapper: LogitsAndFeatures, model: AlexNet):
    batch = torch.export.Dim("batch", min=1, max=4096)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            wrapper,
            (example_input(model),),
            input_names=[INPUT],
            output_names=list(OUTPUTS),
            dynamic_shapes={"x": {0: batch}},
            opset_version=OPSET,
            dynamo=True,
            optimize=True,
            verify=False,
        )
    return program


def set_metadata(proto, envelope: Envelope) -> None:
    """Embed the envelope in ``metadata_props`` (replacing an older one)."""
    keep = [p for p in proto.metadata_props if p.key != KEY]
    del proto.metadata_props[:]
    proto.metadata_props.extend(keep)
    entry = proto.metadata_props.add()
    entry.key, entry.value = KEY, envelope.to_json()
    proto.producer_name = "alexnet-kit"
