"""Build a FAISS index from the store's vectors within a memory cap (``--max-memory``).

Nothing here holds all the vectors at once. Training reads a random sample
(the PCA on at most :data:`~.factory.PCA_TRAIN` of them, then every sample
vector reduced by the PCA as it is read, so k-means sees 3.5 KB a vector
instead of 16 KB); adding streams the shards in batches sized to the cap.

Where the finished index would not fit the cap, an IVF index keeps its
inverted lists on disk: the vectors are added in blocks that fit, each
block written to a temporary file, and the blocks merged into one
``vectors.<token>.ivfdata`` file beside ``vectors.faiss`` (FAISS
``OnDiskInvertedLists``, memory-mapped when searched: the operating system
keeps the lists that queries touch in its page cache). Flat and HNSW
indexes have no such form, and are refused when they do not fit.
"""
from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..errors import AlexKitError
from .factory import (PCA_TRAIN, _drop_full_eigenvectors, as_float32, faiss, gpu_count, index_bytes, make_index,
                      to_cpu, to_gpu, train_index, train_size)
from .store import Store

#: what one streamed vector costs while it is read, converted and encoded, per dimension
_BYTES_PER_DIM = 12
_UNITS = {"": 1, "b": 1, "k": 2**10, "kb": 10**3, "kib": 2**10, "m": 2**20, "mb": 10**6, "mib": 2**20,
          "g": 2**30, "gb": 10**9, "gib": 2**30, "t": 2**40, "tb": 10**12, "tib": 2**40}


def parse_size(text: str | int) -> int:
    """Bytes from ``4G``, ``512M``, ``1.5GiB``, ``2GB`` or a plain number of bytes (K/M/G/T alone are binary)."""
    if isinstance(text, int):
        return text
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", str(text))
    if not m or m.group(2).lower() not in _UNITS or float(m.group(1)) <= 0:
        raise ValueError(f"not a size: {text!r} (e.g. 4G, 512M, 1.5GiB)")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def default_max_memory() -> int:
    """A quarter of this machine's RAM."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 4
    except (ValueError, OSError, AttributeError):
        return 4 << 30


def batch_rows(dim: int, max_memory: int) -> int:
    """Vectors per streamed batch: a sixteenth of the cap, between 256 and 65,536."""
    return int(min(65536, max(256, max_memory // 16 // (dim * _BYTES_PER_DIM))))


def build(root: Path, store: Store, spec: str, dim: int, max_memory: int, progress: bool = False):
    """(trained and filled index, name of its on-disk lists file or None), from every vector in ``store``."""
    n = store.count()[0]
    index = make_index(spec, dim)
    if not index.is_trained:
        index = train(index, store, spec, n, dim, max_memory)
    batch = batch_rows(dim, max_memory)
    fixed = index_bytes(index)
    per = _per_vector(index, spec)
    need = fixed + n * per + batch * dim * _BYTES_PER_DIM
    if need <= max_memory:
        with _bar(n, progress) as bar:
            for ids, vecs in store.iter_vectors(dim, batch):
                index.add_with_ids(as_float32(vecs), ids)
                bar.update(len(ids))
        return index, None
    if _ivf(index) is None:
        raise AlexKitError(f"{root}: a {spec} index of {n:,} photos needs about {need / 2**30:.1f} GiB, over "
                           f"--max-memory {max_memory / 2**30:.1f} GiB, and only IVF indexes can keep their lists "
                           "on disk: raise --max-memory or choose --index-type ivf")
    block = max(batch, (max_memory - fixed - batch * dim * _BYTES_PER_DIM) // (2 * per))
    return index, on_disk(root, index, store, dim, batch, int(block), progress)


def train(index, store: Store, spec: str, n: int, dim: int, max_memory: int):
    """Train on a random sample read in batches; with a PCA in front, k-means sees the reduced vectors.
    Returns the trained index (another object when it was trained on a GPU)."""
    ids = np.random.default_rng(0).permutation(store.sample_ids(train_size(spec, n)))  # any prefix is a random sample
    if len(ids) == 0:
        raise AlexKitError(f"{store.path.parent}: no readable photos to train a {spec} index on")
    pre = index if isinstance(index, faiss().IndexPreTransform) else None
    if pre is None or pre.chain.size() != 1:
        keep = max(1, max_memory // 4 // (dim * 4))  # the whole sample as float32 (a quarter of the cap)
        sample = store.vectors(np.sort(ids[:keep]), dim)[1]
        gpu_index, on_gpu = to_gpu(index) if gpu_count() else (index, False)
        train_index(gpu_index, sample)  # k-means is where a GPU pays off most
        return to_cpu(gpu_index) if on_gpu else gpu_index
    vt = pre.chain.at(0)
    first = min(len(ids), PCA_TRAIN, max(2 * dim, max_memory // 4 // (dim * 4)))
    vt.train(as_float32(store.vectors(np.sort(ids[:first]), dim)[1]))
    _drop_full_eigenvectors(vt)
    keep = min(len(ids), max(1, max_memory // 4 // (vt.d_out * 4)))
    batch = batch_rows(dim, max_memory)
    reduced = np.concatenate([vt.apply(as_float32(store.vectors(np.sort(ids[i : min(i + batch, keep)]), dim)[1]))
                              for i in range(0, keep, batch)])
    inner = faiss().downcast_index(pre.index)
    gpus = gpu_count() > 0
    if gpus:  # k-means on the GPUs: the step that gains most from them
        inner.clustering_index = faiss().index_cpu_to_all_gpus(faiss().IndexFlatL2(vt.d_out))
    inner.train(reduced)
    if gpus:
        inner.clustering_index = None
    pre.is_trained = True
    return index


def on_disk(root: Path, index, store: Store, dim: int, batch: int, block: int, progress: bool) -> str:
    """Add every vector in blocks of ``block``, then merge the blocks into a new ``.ivfdata`` file: its name."""
    from faiss.contrib.ondisk import merge_ondisk  # defers faiss

    fs = faiss()
    tmp = root / "faiss-blocks.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    names: list[str] = []
    part, filled = None, 0
    try:
        with _bar(store.count()[0], progress) as bar:
            for ids, vecs in store.iter_vectors(dim, batch):
                if part is None:
                    part, filled = fs.clone_index(index), 0
                part.add_with_ids(as_float32(vecs), ids)
                filled += len(ids)
                bar.update(len(ids))
                if filled >= block:
                    names.append(_write_block(part, tmp, len(names)))
                    part = None
            if part is not None:
                names.append(_write_block(part, tmp, len(names)))
        name = f"vectors.{secrets.token_hex(4)}.ivfdata"
        with c_stdout_quiet():  # FAISS prints "resizing ..." on the C stdout
            merge_ondisk(index, names, str(root / name))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return name


def _write_block(part, folder: Path, k: int) -> str:
    path = str(folder / f"block-{k:04d}.faiss")
    faiss().write_index(part, path)
    return path


def _per_vector(index, spec: str) -> int:
    """Bytes a vector costs in the index (code and id, plus half again: lists grow by doubling; HNSW's links)."""
    ivf = _ivf(index)
    if ivf is not None:
        code = ivf.code_size
    else:
        try:
            code = index.sa_code_size()
        except RuntimeError:
            code = index.d * 4
    return int((code + 8) * 1.5) + (300 if "HNSW" in spec else 0)


def _ivf(index):
    try:
        return faiss().extract_index_ivf(index)
    except RuntimeError:
        return None


def _bar(n: int, progress: bool):
    return tqdm(total=n, unit="vec", desc="FAISS index", disable=not progress, dynamic_ncols=True, file=sys.stderr)


@contextlib.contextmanager
def c_stdout_quiet():
    """Silence what C code prints on file descriptor 1 (Python's own stdout is flushed first)."""
    sys.stdout.flush()
    saved = os.dup(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(devnull)
