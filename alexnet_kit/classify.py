"""Classification as in the paper's test procedure (§4.1): ten crops, averaged softmax.

    >>> from alexnet_kit import Classifier
    >>> clf = Classifier.load("model.safetensors")          # or an exported artifact
    >>> clf.selection                                         # what runs it, and why
    >>> for r in clf.classify(["cat.jpg", "dog.png"], top=5):
    ...     print(r.name, r.error or r.labels[0])

Each group of photos is one batched forward pass of ``photos x crops``
inputs (never one crop at a time); decoding runs ahead in threads.
"""
from __future__ import annotations

import collections
import os
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Iterable, Iterator

import numpy as np

from .batching import iter_batches
from .engines import Engine, Precision, Selection, choose
from .engines.messages import stderr_log
from .errors import ImageError
from .images import ImageSource, source_name
from .metrics import average_crops


@dataclass
class Label:
    index: int
    name: str
    probability: float
    wnid: str | None = None

    def to_dict(self) -> dict:
        return {"index": self.index, "label": self.name, "wnid": self.wnid, "probability": self.probability}


@dataclass
class Result:
    source: ImageSource
    name: str
    labels: list[Label] = field(default_factory=list)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict:
        return {"path": self.name, "top": [l.to_dict() for l in self.labels], "error": self.error}


BATCH_PHOTOS = 8  # photos per forward pass (80 crops with ten-crop): the engine is measured at this batch


class Classifier:
    def __init__(self, engine: Engine | Selection, crops: int = 10, batch_photos: int = BATCH_PHOTOS,
                 workers: int | None = None):
        """``engine``: a :class:`~alexnet_kit.engines.Selection` (opened here) or an engine already open."""
        if crops not in (1, 10):
            raise ValueError("crops must be 1 or 10")
        if isinstance(engine, Selection):
            engine = engine.open()
        self.engine = engine
        #: what runs and why (None for an engine opened by file)
        self.selection: Selection | None = engine.selection
        self.meta = engine.meta
        self.crops = crops
        self.batch_photos = batch_photos
        self.workers = workers

    @classmethod
    def load(cls, path: str | os.PathLike, device: str = "cpu", crops: int = 10, engine: str | None = None,
             precision: str | Precision | None = None, **kw) -> "Classifier":
        """From a checkpoint (``.safetensors``) or any artifact the engines know, through
        :func:`~alexnet_kit.engines.choose`: without ``engine``/``precision`` the stored verdict for this
        model and CPU, else fp32, measuring nothing; with either (``"auto"`` included, the CLI's default)
        what is not measured yet is measured once, said on stderr.
        """
        batch = crops * kw.get("batch_photos", BATCH_PHOTOS)
        return cls(choose(path, engine, precision, device=device, batch=batch, log=stderr_log), crops=crops, **kw)

    @property
    def trained(self) -> bool:
        return self.meta.trained

    def probabilities(self, photos: np.ndarray) -> np.ndarray:
        """uint8 (N, 256, 256, 3) photos -> (N, classes) crop-averaged softmax."""
        if len(photos) == 0:
            return np.empty((0, self.meta.config.num_classes), np.float32)
        return self._crop_probabilities(self.meta.preprocess.crops(photos, self.crops))

    def _crop_probabilities(self, x) -> np.ndarray:
        """Cropped network input (N*crops, 3, C, C) -> (N, classes) averaged softmax (§4.1)."""
        return average_crops(self.engine.logits(x), self.crops).numpy()

    def top_labels(self, probs: np.ndarray, top: int) -> list[Label]:
        top = max(1, min(top, len(probs)))
        order = np.argsort(-probs, kind="stable")[:top]
        wnids = self.meta.wnids
        return [Label(int(i), self.meta.classes[i], float(probs[i]), wnids[i] if wnids else None) for i in order]

    def classify(self, sources: Iterable[ImageSource], top: int = 5) -> Iterator[Result]:
        """One :class:`Result` per source, in order; unreadable photos carry ``error``."""
        size = self.meta.preprocess.resize
        batches = iter_batches(sources, self.batch_photos, size, self.workers, mode=self.meta.preprocess.resize_mode)
        # Crops of batch i+1 are cut in a helper thread while the model runs
        # on batch i (decoding is already threaded further ahead), so the
        # model never waits for preprocessing.
        # Two input buffers, alternating: one being filled, one being read by
        # the model (batch i's results are all yielded before batch i+2 is
        # submitted, so a buffer is never overwritten while in use).
        c = self.meta.preprocess.crop
        buffers = [np.empty((self.batch_photos * self.crops, 3, c, c), np.float32) for _ in range(2)]
        with ThreadPoolExecutor(1, thread_name_prefix="alexnet-kit-crops") as pool:
            pending: collections.deque[Future] = collections.deque()
            for i, item in enumerate(batches):
                pending.append(pool.submit(self._inputs, *item, buffers[i % 2]))
                if len(pending) > 1:
                    yield from self._results(*pending.popleft().result(), top)
            while pending:
                yield from self._results(*pending.popleft().result(), top)

    def _inputs(self, entries: list, photos: np.ndarray, out: np.ndarray):
        return entries, (self.meta.preprocess.crops(photos, self.crops, out=out) if len(photos) else None)

    def _results(self, entries: list, x, top: int) -> Iterator[Result]:
        probs = iter(self._crop_probabilities(x) if x is not None else ())
        for e in entries:
            if e.error is not None:
                yield Result(e.source, e.name, error=str(e.error))
            else:
                yield Result(e.source, e.name, self.top_labels(next(probs), top))

    def classify_one(self, source: ImageSource, top: int = 5) -> Result:
        """Classify one photo; raises :class:`ImageError` if it cannot be read."""
        photo = self.meta.preprocess.load(source)
        return Result(source, source_name(source), self.top_labels(self.probabilities(photo[None])[0], top))


__all__ = ["Classifier", "Label", "Result", "ImageError"]
