"""The interface every engine implements."""
from __future__ import annotations

import abc

import torch

from ..meta import ModelMeta


class Engine(abc.ABC):
    """Runs one model file. Inputs are normalised, cropped float32 batches."""

    meta: ModelMeta
    #: identifies the weights (the checkpoint's weights_sha256); indexes record it
    fingerprint: str
    #: what actually runs, for humans: e.g. "torch eager on cpu"
    description: str

    @abc.abstractmethod
    def logits_and_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, classes) logits and (N, 4096) fc7 features (after ReLU), on the CPU."""

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits_and_features(x)[0]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits_and_features(x)[1]
