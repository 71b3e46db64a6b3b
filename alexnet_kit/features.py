"""Features of photos: fc7 for similarity search (§6.1); any named layer, or several, from checkpoints.

The paper measures image similarity by the Euclidean distance between the
4096-d activations of the last hidden layer (fc7, after its ReLU, §3.1). We
extract them from any engine (checkpoint or exported artifact), from the
centre crop (one forward pass per photo, the default) or averaged over the
ten test crops of §4.1 (ten passes; the four corners, the centre and their
mirrors, so a mirrored photo gets exactly the same feature). Vectors are
L2-normalised by default, so that the Euclidean ranking is the cosine
ranking; ``metric="euclidean"`` keeps them raw, as the paper compares them.

``layer`` names any layer of :mod:`alexnet_kit.named_layers` (conv1_pre ...
fc8), or several (``"conv3,fc7"``): all come from one forward pass, and a
row is their blocks side by side in the order named
(:attr:`FeatureExtractor.layer_columns` says where each is). ``spatial``
says how a map (C, H, W) becomes columns: ``flatten`` keeps all C*H*W
values, ``max`` and ``mean`` one per map over its H x W positions; vectors
are kept as they are. Ten-crop averaging is per column, after that; with
the cosine metric each layer's block is L2-normalised on its own (a row of
k layers then has norm sqrt(k)). An exported artifact computes fc7 and fc8
(its two outputs) only; every other layer needs the checkpoint. The index
builder and ``alexnet-kit features`` both extract through
:meth:`FeatureExtractor.extract`.

    >>> fx = FeatureExtractor.load("model.safetensors", layer="conv5,fc7", spatial="max")
    >>> for r in fx.extract(["a.jpg", "b.jpg"]):
    ...     print(r.name, r.error or r.vector.shape)
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from typing import Iterable, Iterator, Sequence

import numpy as np

from .batching import iter_batches
from .engines import Engine, Precision, Selection, choose
from .engines.messages import stderr_log
from .errors import AlexKitError
from .images import ImageSource
from .named_layers import MAP_LAYERS, SPATIAL, feature_size, layer_shapes, parse_layers

METRICS = ("cosine", "euclidean")
_SPATIAL_WORDS = {"flatten": "flattened", "max": "max per map", "mean": "mean per map"}


@dataclass(frozen=True)
class FeatureSettings:
    """What a feature vector means; an index records it and refuses others."""

    layer: str = "fc7"  # one named layer, or several: "conv3,fc7" (kept in that canonical form)
    crops: int = 1  # 1: centre crop; 10: mean over the ten crops of §4.1
    metric: str = "cosine"  # cosine: each layer's block L2-normalised; euclidean: raw, as in §6.1
    spatial: str = "flatten"  # a map's columns: flatten (C*H*W), max or mean (C); "flatten" without maps

    def __post_init__(self):
        try:
            names = parse_layers(self.layer)
        except AlexKitError as e:
            raise ValueError(str(e)) from None
        object.__setattr__(self, "layer", ",".join(names))
        if self.crops not in (1, 10):
            raise ValueError(f"crops must be 1 or 10, got {self.crops}")
        if self.metric not in METRICS:
            raise ValueError(f"metric must be one of {', '.join(METRICS)}, got {self.metric!r}")
        if self.spatial not in SPATIAL:
            raise ValueError(f"spatial must be one of {', '.join(SPATIAL)}, got {self.spatial!r}")
        if not any(n in MAP_LAYERS for n in names):  # vectors are the same whatever it says: one setting for them
            object.__setattr__(self, "spatial", "flatten")

    @property
    def layers(self) -> tuple[str, ...]:
        return tuple(self.layer.split(","))

    @property
    def normalised(self) -> bool:
        return self.metric == "cosine"

    def to_json(self) -> str:
        d = asdict(self)
        if self.spatial == "flatten":  # the default is left out: settings written before it existed read back equal
            del d["spatial"]
        return json.dumps(d, sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, s: str) -> "FeatureSettings":
        return cls(**json.loads(s))

    def describe(self) -> str:
        crops = "centre crop" if self.crops == 1 else "mean of ten crops"
        layers = " + ".join(describe_layer(n, self.spatial) for n in self.layers)
        return f"{layers}, {crops}, {'L2-normalised (cosine)' if self.normalised else 'raw (Euclidean)'}"


def describe_layer(name: str, spatial: str = "flatten") -> str:
    """``"fc7 after ReLU"``, ``"conv3_pre (before ReLU, max per map)"``, ``"pool5 (flattened)"``, ``"fc8 (logits)"``."""
    what = []
    if name.endswith("_pre"):
        what.append("before ReLU")
    elif name == "fc8":
        what.append("logits")
    elif name.startswith(("conv", "fc")):
        return f"{name} after ReLU" + (f" ({_SPATIAL_WORDS[spatial]})" if name in MAP_LAYERS else "")
    if name in MAP_LAYERS:
        what.append(_SPATIAL_WORDS[spatial])
    return f"{name} ({', '.join(what)})"


@dataclass
class Extracted:
    source: ImageSource
    name: str
    vector: np.ndarray | None  # float32 (dim,), None when the photo is unreadable
    error: str | None = None


def l2_normalise(v: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(v, axis=-1, keepdims=True)
    # an all-zero fc7 (every ReLU off) stays zero rather than becoming NaN
    return (v / np.maximum(norm, 1e-12)).astype(np.float32, copy=False)


def default_batch_photos(crops: int) -> int:
    """Photos per forward pass when the caller does not say: about 64 crops, big enough for the
    BLAS, small enough for memory (the engine is measured and tuned at that batch)."""
    return max(1, 64 // crops)


class FeatureExtractor:
    """Feature vectors (fc7 by default) from an :class:`Engine`, batched, decoding ahead in threads."""

    def __init__(
        self,
        engine: Engine | Selection,
        crops: int = 1,
        metric: str = "cosine",
        batch_photos: int | None = None,
        workers: int | None = None,
        layer: str | Sequence[str] = "fc7",
        spatial: str = "flatten",
    ):
        """``engine``: a :class:`~alexnet_kit.engines.Selection` (opened here) or an engine already open.
        ``layer``: a named layer or several (``"conv3,fc7"``); ``spatial``: flatten, max or mean."""
        if isinstance(engine, Selection):
            engine = engine.open()
        self.engine = engine
        #: what runs and why (None for an engine opened by file)
        self.selection: Selection | None = engine.selection
        self.meta = engine.meta
        self.settings = FeatureSettings(layer=",".join(parse_layers(layer)), crops=crops, metric=metric, spatial=spatial)
        engine.check_layers(self.settings.layers)  # one line naming the file when it lacks a layer
        #: where each layer's block lies in a row: name -> (start, end, shape of the layer for one image)
        self.layer_columns: dict[str, tuple[int, int, tuple[int, ...]]] = {}
        shapes, at = layer_shapes(self.meta.config), 0
        for name in self.settings.layers:
            width = feature_size(shapes[name], self.settings.spatial)
            self.layer_columns[name] = (at, at + width, shapes[name])
            at += width
        self.batch_photos = batch_photos or default_batch_photos(crops)
        self.workers = workers

    @classmethod
    def load(cls, path: str | os.PathLike, device: str = "cpu", crops: int = 1, metric: str = "cosine",
             engine: str | None = None, precision: str | Precision | None = None, **kw) -> "FeatureExtractor":
        """``engine``/``precision``: as :meth:`Classifier.load <alexnet_kit.classify.Classifier.load>`
        (``layer=`` and ``spatial=`` pass through ``kw``)."""
        batch = crops * (kw.get("batch_photos") or default_batch_photos(crops))
        selection = choose(path, engine, precision, device=device, batch=batch, log=stderr_log)
        return cls(selection, crops=crops, metric=metric, **kw)

    @property
    def fingerprint(self) -> str:
        return self.engine.fingerprint

    @property
    def precision(self) -> Precision:
        """What the engine computes in: fp32, bf16 or int8."""
        return self.engine.precision

    @property
    def dim(self) -> int:
        """Columns of a row: every layer's block together."""
        return max(end for _, end, _ in self.layer_columns.values())

    @property
    def crops(self) -> int:
        return self.settings.crops

    def features(self, photos: np.ndarray) -> np.ndarray:
        """uint8 (N, 256, 256, 3) photos -> float32 (N, dim)."""
        if len(photos) == 0:
            return np.empty((0, self.dim), np.float32)
        x = self.meta.preprocess.crops(photos, self.crops)
        acts = self.engine.activations(x, self.settings.layers)
        blocks = [self._block(acts[name].numpy(), len(photos)) for name in self.settings.layers]
        return blocks[0] if len(blocks) == 1 else np.concatenate(blocks, axis=1)

    def _block(self, a: np.ndarray, photos: int) -> np.ndarray:
        """One layer's (N * crops, ...) activations -> its (N, columns) block: maps reduced as
        ``spatial`` says, then the crops averaged per column, then L2-normalised for cosine."""
        a = a.astype(np.float32, copy=False)
        if a.ndim == 4 and self.settings.spatial != "flatten":
            hw = a.reshape(a.shape[0], a.shape[1], -1)
            a = hw.max(-1) if self.settings.spatial == "max" else hw.mean(-1, dtype=np.float32)
        f = a.reshape(a.shape[0], -1)
        if self.crops > 1:
            f = f.reshape(photos, self.crops, -1).mean(1)
        return l2_normalise(f) if self.settings.normalised else np.ascontiguousarray(f)

    def batch_done(self, extracted: int) -> bool:
        """Whether the first ``extracted`` results of one :meth:`extract` call end a batch. A job stopped there
        resumes with the very batches an uninterrupted run computes, so its features are bitwise the same
        (a batch's results depend, in the last bits, on which photos share it)."""
        return extracted % self.batch_photos == 0

    def extract(self, sources: Iterable[ImageSource]) -> Iterator[Extracted]:
        """One :class:`Extracted` per source, in order; unreadable ones carry ``error``."""
        size = self.meta.preprocess.resize
        for entries, photos in iter_batches(sources, self.batch_photos, size, self.workers, mode=self.meta.preprocess.resize_mode):
            vectors = iter(self.features(photos))
            for e in entries:
                if e.error is not None:
                    yield Extracted(e.source, e.name, None, str(e.error))
                else:
                    yield Extracted(e.source, e.name, next(vectors))

    def extract_one(self, source: ImageSource) -> np.ndarray:
        """One photo's vector; raises :class:`~alexnet_kit.errors.ImageError` if unreadable."""
        return self.features(self.meta.preprocess.load(source)[None])[0]


__all__ = ["FeatureExtractor", "FeatureSettings", "Extracted", "l2_normalise"]
