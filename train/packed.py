"""The packed training format: one memory-mapped uint8 array per split.

Layout of a prepared folder (written by :mod:`alexnet_kit.train.prepare`)::

    dataset.json          format, image size, classes, split sizes, provenance
    classes.txt           one class name per line (index = line number - 1)
    train/images.u8       raw uint8 (N, 256, 256, 3), C order: no header, memmap-able
    train/labels.npy      int64 (N,)
    train/status.npy      uint8 (N,): 0 not yet packed, 1 packed, 2 unreadable
    train/files.txt       source path of each row
    val/...               the same for the validation split
    mean.npy              float32 (3, 256, 256) RGB mean image of the training split
    pca.npz               eigvals (3,), eigvecs (3, 3) (columns) of the RGB covariance
    report.json           counts and every skipped file with its problem

Why raw arrays and not JPEG shards: reading a 256x256 photo from a memmap is
a 196 KB copy from the page cache, while decoding the same photo from a JPEG
shard costs ~1 ms of CPU per core (measured in benchmarks/bench_data_pipeline.py,
see docs/training.md). The price is disk: 196 KB per photo, 251 GB for
ImageNet's 1.28 M training photos against ~110 GB as JPEG q90.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from alexnet_kit.errors import FileProblem

FORMAT = "alexnet-kit-packed"
VERSION = 1
PENDING, OK, BAD = 0, 1, 2


def is_prepared(path: str | Path) -> bool:
    return (Path(path) / "dataset.json").is_file()


class Split:
    """One split: every *readable* photo as a row of a (N, S, S, 3) uint8 memmap.

    Pickles as its folder, not its contents: a worker process started by spawn
    or forkserver (Python 3.14's Linux default) reopens the memmap instead of
    receiving a copy of it (252 GB for ImageNet's training split).
    """

    def __init__(self, folder: Path, size: int):
        self.folder, self.size = Path(folder), int(size)
        labels = np.load(self.folder / "labels.npy")
        status = np.load(self.folder / "status.npy")
        #: memmap, all rows, including unreadable ones (an empty split, e.g. --val-fraction 0: an
        #: empty array, since an empty file cannot be mapped)
        self.images = (np.memmap(self.folder / "images.u8", dtype=np.uint8, mode="r", shape=(len(labels), size, size, 3))
                       if len(labels) else np.zeros((0, size, size, 3), np.uint8))
        #: int64 indices into ``images`` of the readable rows
        self.rows = np.flatnonzero(status == OK).astype(np.int64)
        #: int64 labels of the readable rows
        self.labels = labels[self.rows].astype(np.int64)
        self._files: list[str] | None = None

    @property
    def files(self) -> list[str]:
        """Source path of each readable row (read on first use: ~100 MB for ImageNet)."""
        if self._files is None:
            every = (self.folder / "files.txt").read_text(encoding="utf-8").splitlines()
            self._files = [every[r] for r in self.rows]
        return self._files

    def __getstate__(self) -> dict:
        return {"folder": str(self.folder), "size": self.size}

    def __setstate__(self, state: dict) -> None:
        self.__init__(Path(state["folder"]), state["size"])

    def __len__(self) -> int:
        return len(self.rows)

    def take(self, i: np.ndarray) -> np.ndarray:
        """uint8 (len(i), S, S, 3) copies of readable photos ``i`` (positions, not rows)."""
        return self.images[self.rows[np.asarray(i)]]


class PackedDataset:
    """A prepared folder: splits, classes, mean image and PCA of the training set."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        info_path = self.root / "dataset.json"
        if not info_path.is_file() and (self.root / "plan.json").is_file():
            raise FileProblem(self.root, "preparation did not finish; run the same `alexnet-kit prepare` again to resume it")
        if not info_path.is_file():
            raise FileProblem(self.root, "not a prepared dataset (no dataset.json); run `alexnet-kit prepare SRC DST` first")
        try:
            self.info = json.loads(info_path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise FileProblem(info_path, f"unreadable ({e})") from None
        if self.info.get("format") != FORMAT or self.info.get("version", 0) > VERSION:
            raise FileProblem(info_path, "not an alexnet-kit packed dataset of a version this code reads")
        if not self.info.get("complete"):
            raise FileProblem(self.root, "preparation did not finish; run the same `alexnet-kit prepare` again to resume it")
        self.size = int(self.info["size"])
        self.classes: list[str] = list(self.info["classes"])
        self.mean = np.load(self.root / "mean.npy").astype(np.float32)
        pca = np.load(self.root / "pca.npz")
        self.eigvals = pca["eigvals"].astype(np.float32)
        self.eigvecs = pca["eigvecs"].astype(np.float32)
        self._splits: dict[str, Split] = {}

    def split(self, name: str) -> Split:
        if name not in self._splits:
            self._splits[name] = open_split(self.root / name, self.size)
        return self._splits[name]

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def open_split(folder: Path, size: int) -> Split:
    return Split(folder, size)
