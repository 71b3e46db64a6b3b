"""The interface every engine implements, and the batched run every caller uses."""
from __future__ import annotations

import abc
import os
from typing import TYPE_CHECKING, Callable, Sequence

import torch

from ..meta import ModelMeta
from .errors import require_layers
from .precision import Precision

if TYPE_CHECKING:
    from .selection import Selection

#: the named layers behind an exported artifact's two outputs: ``features`` is fc7, ``logits`` fc8
ARTIFACT_LAYERS = ("fc7", "fc8")


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
    #: the model file it runs (None where an engine was made some other way)
    path: "str | os.PathLike | None" = None
    #: the named layers (:mod:`alexnet_kit.named_layers`) :meth:`activations` returns: an artifact's
    #: fc7 and fc8; a checkpoint's engine every one
    feature_layers: tuple[str, ...] = ARTIFACT_LAYERS

    @abc.abstractmethod
    def logits_and_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, classes) logits and (N, 4096) fc7 features (after ReLU), on the CPU."""

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits_and_features(x)[0]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits_and_features(x)[1]

    def check_layers(self, names: str | Sequence[str]) -> list[str]:
        """``names`` as a list; one line naming the file, the layers that need a checkpoint and the ones
        this engine has, when it lacks any (an unknown name is one line too)."""
        where = self.path or (self.selection.path if self.selection is not None else self.description)
        return require_layers(where, names, self.feature_layers)

    def activations(self, x: torch.Tensor, names: str | Sequence[str]) -> dict[str, torch.Tensor]:
        """The named layers' activations for the batch ``x``, float32 on the CPU, keyed in the order asked:
        (N, C, H, W) for maps, (N, D) for vectors. Here fc7 and fc8 (the logits), the outputs every file has."""
        names = self.check_layers(names)
        if "fc8" not in names:
            got = {"fc7": self.features(x)}
        elif "fc7" not in names:
            got = {"fc8": self.logits(x)}
        else:
            logits, feats = self.logits_and_features(x)
            got = {"fc7": feats, "fc8": logits}
        return {n: got[n].float().cpu() for n in names}


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
