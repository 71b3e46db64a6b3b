"""The interface every engine implements, and the batched run every caller uses."""
from __future__ import annotations

import abc
from typing import TYPE_CHECKING, Callable

import torch

from ..meta import ModelMeta
from .precision import Precision

if TYPE_CHECKING:
    from .selection import Selection


class Engine(abc.ABC):
    """Runs one model file. Inputs are normalised, cropped float32 batches."""

    meta: ModelMeta
    #: identifies the weights (the checkpoint's weights_sha256); indexes record it
    fingerprint: str
    #: what actually runs, for humans: e.g. "torch eager on cpu"
    description: str
    #: the arithmetic that actually runs (read back from the runtime where it can choose)
    precision: Precision = Precision.FP32
    #: the :class:`~alexnet_kit.engines.selection.Selection` it was opened from (None when opened by file)
    selection: "Selection | None" = None
    #: layers :meth:`layer_features` can return; exported artifacts compute fc7 only
    feature_layers: tuple[str, ...] = ("fc7",)

    @abc.abstractmethod
    def logits_and_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, classes) logits and (N, 4096) fc7 features (after ReLU), on the CPU."""

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits_and_features(x)[0]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits_and_features(x)[1]

    def layer_features(self, x: torch.Tensor, layer: str) -> torch.Tensor:
        """(N, D) activations of ``layer`` (fc7 and fc6 after ReLU; pool5 flattened)."""
        if layer == "fc7":
            return self.features(x)
        raise ValueError(f"{layer} features need a checkpoint (.safetensors): this {type(self).__name__} "
                         f"computes {', '.join(self.feature_layers)} only")


@torch.inference_mode()
def run_batches(fn: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]], x: torch.Tensor,
                batch: int = 80) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, features) of ``x`` through ``fn`` (an engine's or a torch model's ``logits_and_features``),
    ``batch`` crops a call, as float32 on the CPU."""
    logits, feats = [], []
    for i in range(0, len(x), batch):
        a, b = fn(x[i : i + batch])
        logits.append(a.float().cpu())
        feats.append(b.float().cpu())
    return torch.cat(logits), torch.cat(feats)
