"""Features of photos: fc7 for similarity search (§6.1); fc6 and pool5 from checkpoints.

The paper measures image similarity by the Euclidean distance between the
4096-d activations of the last hidden layer (fc7, after its ReLU). We
extract them from any engine (checkpoint or exported artifact), from the
centre crop (one forward pass per photo, the default) or averaged over the
ten test crops of §4.1 (ten passes; the four corners, the centre and their
mirrors, so a mirrored photo gets exactly the same feature). Vectors are
L2-normalised by default, so that the Euclidean ranking is the cosine
ranking; ``metric="euclidean"`` keeps them raw, as the paper compares them.
``layer="fc6"`` or ``"pool5"`` need a checkpoint (an exported artifact has
only the logits and fc7 outputs). The index builder and ``alexnet-kit
features`` both extract through :meth:`FeatureExtractor.extract`.

    >>> fx = FeatureExtractor.load("model.safetensors")
    >>> for r in fx.extract(["a.jpg", "b.jpg"]):
    ...     print(r.name, r.error or r.vector.shape)
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from typing import Iterable, Iterator

import numpy as np

from .batching import iter_batches
from .engines import Engine, Precision, Selection, choose
from .engines.messages import stderr_log
from .errors import AlexKitError
from .images import ImageSource

METRICS = ("cosine", "euclidean")
#: fc7 and fc6 after their ReLU (§6.1 uses fc7), pool5 flattened (the last convolutional features)
LAYERS = ("fc7", "fc6", "pool5")


@dataclass(frozen=True)
class FeatureSettings:
    """What a feature vector means; an index records it and refuses others."""

    layer: str = "fc7"
    crops: int = 1  # 1: centre crop; 10: mean over the ten crops of §4.1
    metric: str = "cosine"  # cosine: L2-normalised; euclidean: raw, as in §6.1

    def __post_init__(self):
        if self.layer not in LAYERS:
            raise ValueError(f"unknown feature layer {self.layer!r} (expected one of: {', '.join(LAYERS)})")
        if self.crops not in (1, 10):
            raise ValueError(f"crops must be 1 or 10, got {self.crops}")
        if self.metric not in METRICS:
            raise ValueError(f"metric must be one of {', '.join(METRICS)}, got {self.metric!r}")

    @property
    def normalised(self) -> bool:
        return self.metric == "cosine"

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, s: str) -> "FeatureSettings":
        return cls(**json.loads(s))

    def describe(self) -> str:
        crops = "centre crop" if self.crops == 1 else "mean of ten crops"
        layer = "pool5 (flattened)" if self.layer == "pool5" else f"{self.layer} after ReLU"
        return f"{layer}, {crops}, {'L2-normalised (cosine)' if self.normalised else 'raw (Euclidean)'}"


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
    """fc7 vectors from an :class:`Engine`, batched, decoding ahead in threads."""

    def __init__(
        self,
        engine: Engine | Selection,
        crops: int = 1,
        metric: str = "cosine",
        batch_photos: int | None = None,
        workers: int | None = None,
        layer: str = "fc7",
    ):
        """``engine``: a :class:`~alexnet_kit.engines.Selection` (opened here) or an engine already open."""
        if isinstance(engine, Selection):
            engine = engine.open()
        self.engine = engine
        #: what runs and why (None for an engine opened by file)
        self.selection: Selection | None = engine.selection
        self.meta = engine.meta
        self.settings = FeatureSettings(layer=layer, crops=crops, metric=metric)
        if layer not in engine.feature_layers:
            where = self.selection.path if self.selection is not None else "this model"
            raise AlexKitError(f"{where}: {layer} features need a checkpoint (.safetensors); an exported artifact "
                               f"computes {', '.join(engine.feature_layers)} only (it has no {layer} output)")
        self.batch_photos = batch_photos or default_batch_photos(crops)
        self.workers = workers

    @classmethod
    def load(cls, path: str | os.PathLike, device: str = "cpu", crops: int = 1, metric: str = "cosine",
             engine: str | None = None, precision: str | Precision | None = None, **kw) -> "FeatureExtractor":
        """``engine``/``precision``: as :meth:`Classifier.load <alexnet_kit.classify.Classifier.load>`
        (``layer=`` passes through ``kw``)."""
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
        if self.settings.layer == "pool5":
            return self.meta.config.flat_features
        return self.meta.config.fc_features

    @property
    def crops(self) -> int:
        return self.settings.crops

    def features(self, photos: np.ndarray) -> np.ndarray:
        """uint8 (N, 256, 256, 3) photos -> float32 (N, dim)."""
        if len(photos) == 0:
            return np.empty((0, self.dim), np.float32)
        x = self.meta.preprocess.crops(photos, self.crops)
        f = self.engine.layer_features(x, self.settings.layer)
        f = f.numpy().astype(np.float32, copy=False)
        if self.crops > 1:
            f = f.reshape(len(photos), self.crops, -1).mean(1)
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
