"""TorchScript through ``torch.jit.trace`` (deprecated in torch 2.13, still asked for).

Tracing is exact for this network (no data-dependent control flow); the
traced graph keeps a dynamic batch dimension. The envelope goes into the
archive's ``_extra_files``.
"""
from __future__ import annotations

import os
import warnings

import torch

from alexnet_kit.engines.artifact import Envelope
from alexnet_kit.engines.torch_archive import EXTRA_FILE
from alexnet_kit.model import AlexNet

from .graph import LogitsAndFeatures, example_input


def export_torchscript(model: AlexNet, envelope: Envelope, path: str | os.PathLike) -> None:
    wrapper = LogitsAndFeatures(model)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(wrapper, example_input(model), check_trace=False)
        torch.jit.save(traced, os.fspath(path), _extra_files={EXTRA_FILE: envelope.to_json()})
