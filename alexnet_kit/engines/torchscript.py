"""TorchScript artifacts (``.ts``) through ``torch.jit.load``.

TorchScript is deprecated in torch 2.13 (torch.export is its successor) but
still the format many C++ and mobile users deploy; the archive's
``_extra_files`` carry the metadata envelope.
"""
from __future__ import annotations

import os
import warnings

import torch

from ..errors import CheckpointError, existing_file, first_line
from .artifact import KEY, Envelope
from .base import Engine

EXTRA_FILE = f"{KEY}.json"


class TorchScriptEngine(Engine):
    def __init__(self, path: str | os.PathLike, device: str = "cpu"):
        path = existing_file(path, CheckpointError, "a model file")
        self.device = torch.device(device)
        extra = {EXTRA_FILE: ""}
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                self.module = torch.jit.load(str(path), map_location=self.device, _extra_files=extra)
        except Exception as e:  # RuntimeError / ValueError from the zip reader
            raise CheckpointError(path, f"not a loadable TorchScript archive, or truncated ({first_line(e)})") from None
        env = Envelope.parse(path, extra[EXTRA_FILE], "TorchScript archive")
        self.module.eval()
        self.meta, self.fingerprint, self.precision, self.envelope = env.meta, env.fingerprint, env.precision, env
        self.description = f"torch {torch.__version__} TorchScript on {self.device}"

    @torch.inference_mode()
    def logits_and_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, feats = self.module(x.to(self.device))
        return logits.float().cpu(), feats.float().cpu()
