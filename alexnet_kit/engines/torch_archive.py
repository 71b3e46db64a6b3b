"""TorchScript (``.ts``) and torch.export (``.pt2``) artifacts: both are torch archives.

Both formats are zip archives read by torch itself, each with the metadata
envelope in an extra file (TorchScript ``_extra_files``, torch.export
``extra_files``) and a module that returns (logits, fc7 features), so one
engine reads both; only the loader differs. TorchScript is deprecated in
torch 2.13 (torch.export is its successor) but still what many C++ and
mobile users deploy.
"""
from __future__ import annotations

import os
import warnings

import torch
from torch.export.passes import move_to_device_pass

from ..errors import CheckpointError, existing_file, first_line
from .artifact import KEY, Envelope
from .base import Engine
from .precision import Precision

EXTRA_FILE = f"{KEY}.json"


class TorchArchiveEngine(Engine):
    #: what the file is, for error messages and :attr:`description`
    kind: str

    def __init__(self, path: str | os.PathLike, device: str = "cpu"):
        path = existing_file(path, CheckpointError, "a model file")
        self.path = path
        self.device = torch.device(device)
        extra = {EXTRA_FILE: ""}
        try:
            self.module = self._load(str(path), extra)
        except Exception as e:  # zip / unpickling / version errors
            raise CheckpointError(path, f"not a loadable {self.kind}, or truncated ({first_line(e)})") from None
        env = Envelope.parse(path, extra[EXTRA_FILE], self.kind)
        self.meta, self.fingerprint, self.envelope = env.meta, env.fingerprint, env
        self.precision = Precision.parse(env.precision)
        self.description = f"torch {torch.__version__} {self.kind} on {self.device}"

    def _load(self, path: str, extra: dict[str, str]) -> torch.nn.Module:
        """The module of the archive at ``path``, on :attr:`device`; fills ``extra`` with its extra files."""
        raise NotImplementedError

    @torch.inference_mode()
    def logits_and_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, feats = self.module(x.to(self.device))
        return logits.float().cpu(), feats.float().cpu()


class TorchScriptEngine(TorchArchiveEngine):
    kind = "TorchScript archive"

    def _load(self, path: str, extra: dict[str, str]) -> torch.nn.Module:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            module = torch.jit.load(path, map_location=self.device, _extra_files=extra)
        return module.eval()


class ExportedProgramEngine(TorchArchiveEngine):
    kind = "torch.export program"

    def _load(self, path: str, extra: dict[str, str]) -> torch.nn.Module:
        program = torch.export.load(path, extra_files=extra)
        if self.device.type != "cpu":
            program = move_to_device_pass(program, self.device)
        self.program = program
        return program.module()
