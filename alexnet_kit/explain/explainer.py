"""Explain a photo: which pixels of its crop drive a class, or its similarity to another photo.

The network sees the central 224x224 crop of the photo made square and
256x256 (§2); every map here is of that crop, and :func:`crop_geometry`
says where the crop lies in the original photo, so a map can be redrawn on
it. Class scores are the crop's softmax probability (occlusion) or logit
(the gradient methods, as Grad-CAM does: the softmax saturates); a
similarity score is the cosine between the crops' fc7 vectors (§6.1).

    >>> ex = Explainer.load("model.safetensors", method="occlusion")
    >>> for e in ex.explain("photo.jpg", top=3):
    ...     print(e.label, e.score, e.heat.shape)
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..engines import Engine, Selection, choose
from ..engines.messages import stderr_log
from ..errors import AlexKitError
from ..images import ImageSource
from ..meta import ModelMeta
from . import methods as M


class MethodNeedsCheckpoint(AlexKitError):
    """A gradient method asked of an exported artifact, which has no gradients."""


@dataclass
class Explanation:
    """One map: ``heat`` (C, C) float32 over ``crop`` (C, C, 3) uint8, for ``label`` with ``score``."""

    photo: str
    method: str
    kind: str  # "class" or "similar"
    label: str  # the class's name, or the other photo's
    class_index: int | None
    score: float  # the class's probability on the crop, or the fc7 cosine
    heat: np.ndarray
    crop: np.ndarray
    geometry: dict
    params: dict = field(default_factory=dict)

    def caption(self) -> str:
        what = f"{self.score:.1%}" if self.kind == "class" else f"cosine {self.score:.3f}"
        subject = self.label if self.kind == "class" else f"similar to {self.label}"
        return f"{self.method}: {subject}, {what}"


def crop_geometry(source: ImageSource, meta: ModelMeta) -> dict:
    """Where the explained crop lies: in the resize x resize square, and in the original photo's pixels."""
    p = meta.preprocess
    (top, left), = p.crop_offsets(1)
    g = {"resize": p.resize, "resize_mode": p.resize_mode, "crop": p.crop,
         "crop_box_in_square": [left, top, left + p.crop, top + p.crop]}
    size = _photo_size(source)
    if size is not None:
        w, h = size
        if p.resize_mode == "crop":  # the central square, scaled (§2)
            side = min(w, h)
            sx = sy = side / p.resize
            ox, oy = (w - side) / 2, (h - side) / 2
        else:  # warp: each axis scaled on its own
            sx, sy, ox, oy = w / p.resize, h / p.resize, 0.0, 0.0
        g["photo_size"] = [w, h]
        g["crop_box_in_photo"] = [round(ox + left * sx, 2), round(oy + top * sy, 2),
                                  round(ox + (left + p.crop) * sx, 2), round(oy + (top + p.crop) * sy, 2)]
    return g


def _photo_size(source: ImageSource) -> tuple[int, int] | None:
    from PIL import Image  # header only: the size without decoding

    if isinstance(source, Image.Image):
        return source.size
    try:
        import io

        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as im:
            w, h = im.size
            if (im.getexif() or {}).get(0x0112) in (5, 6, 7, 8):  # EXIF-rotated a quarter turn when decoded
                w, h = h, w
            return w, h
    except Exception:  # the decoder already accepted the photo; the geometry in the photo is a bonus
        return None


def check_method(path: str | os.PathLike | None, method: str) -> None:
    """One line when ``method`` cannot run on the file ``path``: the gradient methods need a checkpoint."""
    if method in M.GRADIENT_METHODS and (path is None or Path(path).suffix.lower() != ".safetensors"):
        works = ", ".join(m for m in M.METHODS if m not in M.GRADIENT_METHODS)
        raise MethodNeedsCheckpoint(
            f"{path or 'this model'}: {method} needs the checkpoint (.safetensors) for its gradients; on an exported "
            f"artifact the methods that work are: {works} (--method occlusion, forward passes only)")


class Explainer:
    """Maps for photos with one method, forward passes through ``engine``, gradients through its checkpoint."""

    def __init__(self, engine: Engine | Selection, method: str = M.DEFAULT_METHOD, checkpoint: str | os.PathLike | None = None,
                 batch: int = 64, window: int = M.OCCLUSION_WINDOW, stride: int = M.OCCLUSION_STRIDE,
                 ig_steps: int = M.IG_STEPS):
        if isinstance(engine, Selection):
            engine = engine.open()
        if method not in M.METHODS:
            raise AlexKitError(f"unknown method {method!r}: one of {', '.join(M.METHODS)}")
        self.engine, self.meta, self.method = engine, engine.meta, method
        self.batch, self.window, self.stride, self.ig_steps = batch, window, stride, ig_steps
        if checkpoint is None and engine.selection is not None and Path(engine.selection.path).suffix.lower() == ".safetensors":
            checkpoint = engine.selection.path
        self.checkpoint = Path(checkpoint) if checkpoint is not None else None
        self._model = None
        if method in M.GRADIENT_METHODS:
            self._gradient_model()  # refuses an artifact before any photo is read

    @classmethod
    def load(cls, path: str | os.PathLike, method: str = M.DEFAULT_METHOD, engine: str | None = None,
             precision: str | None = None, device: str = "cpu", **kw) -> "Explainer":
        selection = choose(path, engine, precision, device=device, batch=kw.get("batch", 64), log=stderr_log)
        return cls(selection, method, **kw)

    def _gradient_model(self):
        if self._model is None:
            check_method(self.checkpoint, self.method)
            model = getattr(self.engine, "model", None)
            if model is None:
                from ..checkpoint import load_model  # the selected engine is not torch: the weights from the file

                model, _ = load_model(self.checkpoint)
            self._model = M.gradient_model(model)
        return self._model

    # -- the inputs ---------------------------------------------------------

    def _crop(self, photo: np.ndarray) -> tuple[torch.Tensor, np.ndarray]:
        p = self.meta.preprocess
        (top, left), = p.crop_offsets(1)
        return p.crops(photo[None], 1), np.ascontiguousarray(photo[top : top + p.crop, left : left + p.crop])

    def _photo(self, source: ImageSource) -> np.ndarray:
        return self.meta.preprocess.load(source)

    def class_probabilities(self, x: torch.Tensor) -> np.ndarray:
        return torch.softmax(self.engine.logits(x).float(), 1)[0].numpy()

    def pick_classes(self, probs: np.ndarray, classes: Sequence[str] | None, top: int) -> list[int]:
        """The named classes (exact, else case-insensitive, else a unique part of a name), or the ``top`` most probable."""
        if not classes:
            return [int(i) for i in np.argsort(-probs, kind="stable")[:top]]
        return [find_class(self.meta.classes, c) for c in classes]

    # -- the maps -----------------------------------------------------------

    def _map(self, x: torch.Tensor, outputs: str, score) -> torch.Tensor:
        if self.method == "occlusion":
            if outputs == "fc7":
                fwd = lambda t: score(self.engine.features(t).float())  # noqa: E731
            else:
                fwd = lambda t: score(torch.softmax(self.engine.logits(t).float(), 1))  # noqa: E731
            return M.occlusion(fwd, x, self.window, self.stride, self.batch)
        return M.gradient_map(self.method, self._gradient_model(), outputs, score, x, self.ig_steps)

    def params(self) -> dict:
        if self.method == "occlusion":
            return {"window": self.window, "stride": self.stride, "baseline": "mean image"}
        if self.method == "integrated-gradients":
            return {"steps": self.ig_steps, "baseline": "mean image"}
        return {"layer": "conv5"} if "gradcam" in self.method else {}

    def explain(self, source: ImageSource, classes: Sequence[str] | None = None, top: int = 1,
                name: str | None = None) -> list[Explanation]:
        """One :class:`Explanation` per class: those named, else the ``top`` most probable on the crop."""
        photo = self._photo(source)
        x, crop = self._crop(photo)
        probs = self.class_probabilities(x)
        geometry = crop_geometry(source, self.meta)
        out = []
        for c in self.pick_classes(probs, classes, top):
            if self.method == "occlusion":
                score = lambda p, c=c: p[:, c]  # noqa: E731  (probabilities)
            else:
                score = lambda logits, c=c: logits[:, c]  # noqa: E731
            heat = self._map(x, "logits", score).float().numpy()
            out.append(Explanation(name or _name(source), self.method, "class", self.meta.classes[c], c,
                                   float(probs[c]), heat, crop, geometry, self.params()))
        return out

    def explain_similar(self, source: ImageSource, other: ImageSource, name: str | None = None,
                        other_name: str | None = None) -> Explanation:
        """The regions of ``source`` that drive the cosine of its fc7 vector to ``other``'s (§6.1): occlusion maps the
        fall of the cosine, the gradient methods the projection of fc7 on ``other``'s unit vector."""
        x, crop = self._crop(self._photo(source))
        y, _ = self._crop(self._photo(other))
        v = torch.nn.functional.normalize(self.engine.features(y).float(), dim=1)[0]
        cosine = lambda f: torch.nn.functional.normalize(f, dim=1) @ v  # noqa: E731
        cos = float(cosine(self.engine.features(x).float())[0])
        if self.method == "occlusion":
            heat = self._map(x, "fc7", cosine)  # how far the cosine falls with each place hidden
        else:
            # The gradient of the cosine vanishes where the two vectors align (a photo against itself has
            # none at all): the gradient methods explain the projection of fc7 on the other's direction,
            # the sum over fc7's units of each one's share of the similarity.
            heat = self._map(x, "fc7", lambda f: f @ v)
        heat = heat.float().numpy()
        return Explanation(name or _name(source), self.method, "similar", other_name or _name(other), None, cos,
                           heat, crop, crop_geometry(source, self.meta), self.params())


def find_class(classes: Sequence[str], wanted: str) -> int:
    if wanted in classes:
        return list(classes).index(wanted)
    low = wanted.lower()
    exact = [i for i, c in enumerate(classes) if c.lower() == low]
    if exact:
        return exact[0]
    part = [i for i, c in enumerate(classes) if low in c.lower()]
    if len(part) == 1:
        return part[0]
    if part:
        names = ", ".join(classes[i] for i in part[:5]) + (", ..." if len(part) > 5 else "")
        raise AlexKitError(f"class {wanted!r} is ambiguous: {len(part)} classes match ({names})")
    raise AlexKitError(f"no class {wanted!r} in this model's {len(classes)} classes (see alexnet-kit info MODEL)")


def _name(source: ImageSource) -> str:
    return os.fspath(source) if isinstance(source, (str, os.PathLike)) else "photo"
