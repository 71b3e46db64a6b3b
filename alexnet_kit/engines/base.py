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
    #: the arithmetic that actually runs: fp32, bf16 or int8 (read back from the runtime where it can choose)
    precision: str = "fp32"
    #: why this engine and precision were chosen (set by :func:`alexnet_kit.engines.select.open_engine`)
    choice: str = ""
    #: the file that runs (set by open_engine: the int8 export when int8 was chosen)
    path = None
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
