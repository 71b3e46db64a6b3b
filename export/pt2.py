"""torch.export (``.pt2``): TorchScript's successor, with a dynamic batch."""
from __future__ import annotations

import os

import torch

from alexnet_kit.engines.artifact import Envelope
from alexnet_kit.engines.torch_archive import EXTRA_FILE
from alexnet_kit.model import AlexNet

from .graph import LogitsAndFeatures, example_input


def export_pt2(model: AlexNet, envelope: Envelope, path: str | os.PathLike) -> None:
    batch = torch.export.Dim("batch", min=1, max=4096)
    program = torch.export.export(LogitsAndFeatures(model), (example_input(model),), dynamic_shapes={"x": {0: batch}})
    torch.export.save(program, os.fspath(path), extra_files={EXTRA_FILE: envelope.to_json()})
