"""Five ways to say which pixels of a crop drive an output, built on Captum.

Each method takes a normalised crop batch ``x`` (1, 3, C, C) and a *target*:
a function of the network's outputs that returns one score per image (a
class's probability, or the fc7 cosine to another photo). It returns a map
of the crop's size, (C, C) float32, larger where the pixels matter more.

- ``occlusion`` (Zeiler & Fergus 2013, §4.2 of theirs): slide a grey patch
  (the mean image: zero after mean subtraction, §2) over the crop and
  record how much the score drops. Forward passes only, so it runs on every
  engine (ONNX, OpenVINO, int8), batched through it; its resolution is the
  patch's stride.
- ``gradcam`` (Selvaraju et al. 2017): conv5's maps (after their ReLU, §3.1)
  weighted by the score's mean gradient over each map, summed, ReLU'd and
  upsampled from 13x13: coarse, class-discriminative.
- ``guided-gradcam``: Grad-CAM times guided backpropagation: pixel-sharp
  edges inside Grad-CAM's regions.
- ``deconvnet`` (Zeiler & Fergus 2013): the score projected back to pixels
  through the convolutions, ReLUs passing positive signal only.
- ``integrated-gradients`` (Sundararajan et al. 2017): the gradient averaged
  along the straight path from the mean image to the photo, times the
  difference; the attributions sum to the change in score. The most
  faithful by the deletion metric, measured, and the default.

The gradient methods need the PyTorch model; a copy is made with the ReLUs
not in place (Captum hooks each ReLU module; in-place ones break its hooks)
and in fp32 (bf16 gradients are too coarse to rank pixels).
"""
from __future__ import annotations

import contextlib
import copy
import warnings
from typing import Callable, Iterator

import torch
from torch import nn

METHODS = ("occlusion", "gradcam", "guided-gradcam", "deconvnet", "integrated-gradients")
#: the most faithful by the deletion metric (Petsiuk et al. 2018) that takes at most 2 s a photo on the paper's
#: network on 2 CPU cores (docs/benchmarks.md)
DEFAULT_METHOD = "integrated-gradients"
#: the methods that differentiate through the PyTorch model, so need a checkpoint
GRADIENT_METHODS = METHODS[1:]

#: occlusion's patch and stride in pixels of the 224 crop: about a conv5 unit's stride (16)
OCCLUSION_WINDOW = 32
OCCLUSION_STRIDE = 16
#: steps of the path integral, all in one batched pass (Captum's default: 50 steps). Measured on the paper's
#: network, 2 loaded cores: 16 steps in one pass 2.7 s a photo, 32 steps in batches of 8 9.3 s; 16 steps are as
#: faithful as 32 by the deletion metric (docs/benchmarks.md)
IG_STEPS = 16

Score = Callable[[torch.Tensor], torch.Tensor]  # outputs of a batch -> (N,) scores


@contextlib.contextmanager
def quiet_captum() -> Iterator[None]:
    """Captum's notices that it set requires_grad on the input and hooks the ReLUs: expected here, not news."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*(require gradients|backward hooks on ReLU).*")
        yield


def gradient_model(model: nn.Module) -> nn.Module:
    """A float32, eval-mode copy of ``model`` whose ReLUs do not work in place, with frozen weights."""
    m = copy.deepcopy(model).float().eval()
    for mod in m.modules():
        if isinstance(mod, nn.ReLU):
            mod.inplace = False
        for p in mod.parameters(recurse=False):
            p.requires_grad_(False)
    return m


class _Scored(nn.Module):
    """``model`` followed by a score: Captum's methods attribute output column 0 of a module."""

    def __init__(self, model: nn.Module, outputs: str, score: Score):
        super().__init__()
        self.model, self.outputs, self.score = model, outputs, score

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model.fc7_features(x) if self.outputs == "fc7" else self.model(x)
        return self.score(out)[:, None]


def occlusion(forward: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, window: int = OCCLUSION_WINDOW,
              stride: int = OCCLUSION_STRIDE, batch: int = 64, per_eval: int | None = None) -> torch.Tensor:
    """The drop in ``forward``'s (N,) score as a ``window``-pixel patch of the mean image covers each place.

    ``forward`` runs batches of occluded crops (any engine's forward pass); ``per_eval`` crops go through it
    at a time (default ``batch``; Captum's own default is 1).
    """
    from captum.attr import Occlusion  # defers captum, an optional dependency

    attr = Occlusion(lambda t: forward(t)[:, None]).attribute(
        x, sliding_window_shapes=(x.shape[1], window, window), strides=(x.shape[1], stride, stride),
        baselines=0.0, target=0, perturbations_per_eval=per_eval or batch)
    return attr[0].sum(0)  # the same value on every channel of a pixel: one map


def gradient_map(method: str, model: nn.Module, outputs: str, score: Score, x: torch.Tensor,
                 ig_steps: int = IG_STEPS, ig_batch: int | None = None) -> torch.Tensor:
    """A gradient method's (C, C) map; ``model`` from :func:`gradient_model`, ``outputs`` "logits" or "fc7";
    ``ig_batch``: integrated gradients' steps a pass (None: all in one, the fastest here)."""
    with quiet_captum():
        return _gradient_map(method, model, outputs, score, x, ig_steps, ig_batch)


def _gradient_map(method, model, outputs, score, x, ig_steps, ig_batch) -> torch.Tensor:
    from captum.attr import Deconvolution, GuidedGradCam, IntegratedGradients, LayerAttribution, LayerGradCam  # defers captum

    scored = _Scored(model, outputs, score).eval()
    last_conv = model.act5  # conv5 after its ReLU: the last maps before pooling (§3.5)
    x = x.detach().float().to(next(model.parameters()).device)
    if method == "gradcam":
        cam = LayerGradCam(scored, last_conv).attribute(x, target=0, relu_attributions=True)
        return LayerAttribution.interpolate(cam, tuple(x.shape[-2:]), "bilinear")[0, 0].detach().cpu()
    if method == "guided-gradcam":
        attr = GuidedGradCam(scored, last_conv).attribute(x, target=0)
        return attr[0].abs().amax(0).detach().cpu()
    if method == "deconvnet":
        return Deconvolution(scored).attribute(x, target=0)[0].abs().amax(0).detach().cpu()
    if method == "integrated-gradients":
        # baseline 0 is the mean image (inputs are mean-subtracted, §2); positive = evidence for the score
        attr = IntegratedGradients(scored).attribute(x, baselines=0.0, target=0, n_steps=ig_steps,
                                                     internal_batch_size=ig_batch)
        return attr[0].sum(0).detach().cpu()
    raise ValueError(f"unknown gradient method {method!r} (one of {', '.join(GRADIENT_METHODS)})")
