"""Decode photos ahead of the model, in batches, keeping bad ones as errors.

Pillow releases the GIL while it decodes and resizes, so a small thread
pool keeps the next batches ready while the model runs on the current one
(the model never waits for JPEG decoding once the pipeline is full). Order
is preserved; a photo that cannot be read becomes an error entry in its
place and never stops the stream.
"""
from __future__ import annotations

import collections
import os
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Iterable, Iterator

import numpy as np

from .errors import ImageError
from .images import ImageSource, load_square, source_name


@dataclass
class Loaded:
    source: ImageSource
    name: str
    photo: np.ndarray | None  # uint8 (R, R, 3), None when unreadable
    error: ImageError | None = None


def _load(src: ImageSource, size: int, mode: str = "crop") -> Loaded:
    name = source_name(src)
    try:
        return Loaded(src, name, load_square(src, size, mode))
    except ImageError as e:
        return Loaded(src, name, None, e)


def default_workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))


def iter_loaded(sources: Iterable[ImageSource], size: int = 256, workers: int | None = None, prefetch: int = 32,
                mode: str = "crop") -> Iterator[Loaded]:
    """Photos in input order, decoded by ``workers`` threads up to ``prefetch`` ahead.

    ``size`` and ``mode`` as in :func:`alexnet_kit.images.load_square`.
    """
    workers = workers or default_workers()
    if workers <= 1:
        for src in sources:
            yield _load(src, size, mode)
        return
    pending: collections.deque[Future] = collections.deque()
    with ThreadPoolExecutor(workers, thread_name_prefix="alexnet-kit-decode") as pool:
        for src in sources:
            pending.append(pool.submit(_load, src, size, mode))
            if len(pending) >= prefetch:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def iter_batches(
    sources: Iterable[ImageSource], batch: int, size: int = 256, workers: int | None = None, mode: str = "crop"
) -> Iterator[tuple[list[Loaded], np.ndarray]]:
    """(entries, photos): every entry in order, and the readable ones stacked (K, R, R, 3).

    Each batch holds ``batch`` entries (readable or not); the array holds the
    readable ones in the same order, possibly none.
    """
    entries: list[Loaded] = []
    for item in iter_loaded(sources, size, workers, prefetch=max(2 * batch, 16), mode=mode):
        entries.append(item)
        if len(entries) == batch:
            yield entries, _stack(entries, size)
            entries = []
    if entries:
        yield entries, _stack(entries, size)


def _stack(entries: list[Loaded], size: int) -> np.ndarray:
    photos = [e.photo for e in entries if e.photo is not None]
    if not photos:
        return np.empty((0, size, size, 3), np.uint8)
    return np.stack(photos)
