"""torch.export artifacts (``.pt2``) through ``torch.export.load``.

The successor of TorchScript: a graph of ATen operators with its weights,
saved with the metadata envelope in ``extra_files``.
"""
from __future__ import annotations

import os

import torch

from ..errors import CheckpointError, existing_file, first_line
from .artifact import KEY, Envelope
from .base import Engine

EXTRA_FILE = f"{KEY}.json"


class ExportedProgramEngine(Engine):
    def __init__(self, path: str | os.PathLike, device: str = "cpu"):
        path = existing_file(path, CheckpointError, "a model file")
        self.device = torch.device(device)
        extra = {EXTRA_FILE: ""}
        try:
            program = torch.export.load(str(path), extra_files=extra)
        except Exception as e:  # zip / unpickling / version errors
            raise CheckpointError(path, f"not a loadable torch.export (.pt2) program, or truncated ({first_line(e)})") from None
        env = Envelope.parse(path, extra[EXTRA_FILE], "torch.export program")
        if self.device.type != "cpu":
            from torch.export.passes import move_to_device_pass

            program = move_to_device_pass(program, self.device)
        self.program = program
        self.module = program.module()
        self.meta, self.fingerprint, self.precision, self.envelope = env.meta, env.fingerprint, env.precision, env
        self.description = f"torch {torch.__version__} torch.export program on {self.device}"

    @torch.inference_mode()
    def logits_and_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, feats = self.module(x.to(self.device))
        return logits.float().cpu(), feats.float().cpu()
