"""Parity of an artifact with the PyTorch model, on real photos.

The artifact is reloaded from disk by its own runtime (a fresh onnxruntime
session, ``torch.jit.load``, ``torch.export.load``), fed the same ten-crop
batches as the model, and compared on

* the raw logits of every crop (max absolute difference) and the fc7
  features (max absolute difference),
* the ten-crop top-5 labels of every photo (§4.1 averaged softmax): identical
  lists for an exact export, top-1 agreement for int8.

An fp32 export must match within ``atol + rtol * max|logit|`` and give
identical top-5 lists; an int8 export must agree on the top-1 label for at
least ``min_top1`` of the photos (:data:`~alexnet_kit.engines.precision.EXPORT_INT8_MIN_TOP1`,
where the reason for its value sits beside the serving gate's). Anything else fails the export.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Iterable, Sequence

import numpy as np
import torch

from alexnet_kit.engines.base import Engine, run_batches
from alexnet_kit.engines.gate import reference_photos
from alexnet_kit.engines.precision import EXPORT_INT8_MIN_TOP1
from alexnet_kit.errors import AlexKitError, ImageError
from alexnet_kit.images import find_images, load_square
from alexnet_kit.metrics import average_crops
from alexnet_kit.model import AlexNet
from alexnet_kit.preprocess import Preprocess


def load_photos(paths: Iterable[str | os.PathLike], size: int, mode: str = "crop") -> np.ndarray:
    """uint8 (N, size, size, 3), decoded with resize ``mode``; unreadable files are skipped."""
    photos = []
    for p in paths:
        try:
            photos.append(load_square(p, size, mode))
        except ImageError:
            continue
    if not photos:
        raise AlexKitError("no readable photos to verify the export with (pass --photos DIR)")
    return np.stack(photos)


@dataclass
class ParityReport:
    photos: int
    crops: int
    max_abs_logit: float
    logit_scale: float  # max |logit| of the reference, for scale
    max_abs_feature: float
    top5_identical: int  # photos whose ten-crop top-5 list is identical
    top1_agree: int
    tolerance: float
    exact: bool
    passed: bool
    reason: str = ""

    @property
    def top1_agreement(self) -> float:
        return self.top1_agree / self.photos

    def summary(self) -> str:
        status = "PASS" if self.passed else "FAIL"
        return (
            f"{status}: {self.photos} photos x {self.crops // self.photos} crops; max |logit diff| {self.max_abs_logit:.3g} "
            f"(logits up to {self.logit_scale:.3g}, tolerance {self.tolerance:.3g}); max |fc7 diff| {self.max_abs_feature:.3g}; "
            f"top-5 identical {self.top5_identical}/{self.photos}; top-1 agreement {self.top1_agree}/{self.photos}"
            + (f" -- {self.reason}" if self.reason else "")
        )

    def to_dict(self) -> dict:
        return asdict(self) | {"top1_agreement": self.top1_agreement}


def compare(
    engine: Engine,
    model: AlexNet,
    preprocess: Preprocess,
    photos: np.ndarray,
    crops: int = 10,
    exact: bool = True,
    atol: float = 1e-4,
    rtol: float = 1e-5,
    min_top1: float = EXPORT_INT8_MIN_TOP1,
    reference: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> ParityReport:
    x = preprocess.crops(photos, crops)
    ref_logits, ref_feats = reference if reference is not None else run_batches(model.eval().logits_and_features, x)
    got_logits, got_feats = run_batches(engine.logits_and_features, x)
    if got_logits.shape != ref_logits.shape or got_feats.shape != ref_feats.shape:
        raise AlexKitError(f"artifact outputs have shapes {tuple(got_logits.shape)}, {tuple(got_feats.shape)}; "
                           f"the model's are {tuple(ref_logits.shape)}, {tuple(ref_feats.shape)}")
    n = len(photos)
    scale = float(ref_logits.abs().max())
    max_logit = float((got_logits - ref_logits).abs().max())
    max_feat = float((got_feats - ref_feats).abs().max())
    top_ref = average_crops(ref_logits, crops).topk(min(5, ref_logits.shape[1]), dim=1).indices
    top_got = average_crops(got_logits, crops).topk(min(5, got_logits.shape[1]), dim=1).indices
    identical = int((top_ref == top_got).all(1).sum())
    top1 = int((top_ref[:, 0] == top_got[:, 0]).sum())
    tol = atol + rtol * scale
    feat_tol = atol + rtol * float(ref_feats.abs().max())
    reasons = []
    if exact:
        if not max_logit <= tol:  # also catches NaN
            reasons.append(f"logits differ by {max_logit:.3g} > {tol:.3g}")
        if not max_feat <= feat_tol:
            reasons.append(f"fc7 features differ by {max_feat:.3g} > {feat_tol:.3g}")
        if identical != n:
            reasons.append(f"top-5 differs on {n - identical} photos")
    elif not top1 >= min_top1 * n:
        reasons.append(f"top-1 agreement {top1}/{n} below {min_top1:.0%}")
    return ParityReport(n, len(x), max_logit, scale, max_feat, identical, top1, tol, exact, not reasons, "; ".join(reasons))


def photos_for(paths: Sequence[str | os.PathLike] | None, size: int, mode: str = "crop") -> np.ndarray:
    """Photos from files or folders (recursively), or the reference photos."""
    if not paths:
        files = reference_photos()
    else:
        files = find_images(paths)
    return load_photos(files, size, mode)
