"""Which FAISS index for how many photos, and how to train and search it.

Small collections get an exact index (``Flat``: every 4096-d vector kept,
16 KiB per photo, brute force, recall 1). Past ``FLAT_MAX`` photos that
stops fitting in memory and in time, so vectors are compressed as the paper
suggests (§6.1, "compressing these vectors to short binary codes"): a PCA
rotation (learned on a sample), an inverted file of k-means cells (only
``nprobe`` cells are scanned per query) and 8-bit scalar quantisation of
each component. An index that re-ranks its candidates with the stored full
vectors (the default, :mod:`.rerank`) keeps 256 dimensions: 264 bytes per
photo, id included; one that does not keeps 896: 904 bytes.
``docs/search.md`` and ``docs/benchmarks.md`` give the measured recall.

Every index uses the L2 metric: for L2-normalised vectors the L2 ranking is
the cosine ranking (``cos = 1 - d^2 / 2``), and unlike inner products it is
preserved by the PCA's centring.
"""
from __future__ import annotations

import math
import re

import numpy as np

#: at most this many photos get an exact (Flat) index when the type is "auto"
FLAT_MAX = 20_000
#: dimensions kept by the PCA of compressed indexes that do not re-rank: the most that keeps a
#: photo under 1 KB (896 bytes of codes + id); fewer lose recall (docs/benchmarks.md: PCA to 256
#: keeps 0.92 of the exact top 10 at 100k, 512 keeps 0.95, 768 0.97)
PCA_DIM = 896
#: dimensions kept when the index re-ranks its candidates with the stored vectors (the default):
#: its codes only have to bring the true neighbours into the first hundred, which 256 dimensions do
#: (recall@10 0.996 after re-ranking at 1M photos against 0.997 with 896, for 264 bytes a photo
#: instead of 904 and a scan 3.5x cheaper: docs/benchmarks.md, "Re-ranking and the float16 store")
PCA_DIM_RERANK = 256


def faiss():
    """faiss, imported on first use (``alexnet-kit classify`` never pays for it)."""
    import faiss as _faiss  # defers faiss, an optional dependency

    return _faiss


def nlist_for(n: int) -> int:
    """k-means cells: about 2 sqrt(n), a power of two, with >= 39 training points per cell."""
    target = 2 * math.sqrt(max(n, 1))
    nlist = 2 ** round(math.log2(max(target, 1)))
    while nlist > 1 and nlist * 39 > n:  # faiss wants >= 39 training points per cell
        nlist //= 2
    return int(min(max(nlist, 1), 65536))


def resolve_spec(kind: str, n: int, dim: int, rerank: bool = False) -> str:
    """A FAISS factory string for ``kind`` (auto, flat, ivf, hnsw, or a factory string itself);
    ``rerank``: the index re-ranks its candidates, so a compressed one keeps fewer PCA dimensions."""
    kind = kind.strip()
    low = kind.lower()
    d = min(PCA_DIM_RERANK if rerank else PCA_DIM, dim)
    pca = f"PCAR{d}," if d < dim else ""
    if low == "auto":
        low = "flat" if n <= FLAT_MAX else "ivf"
    if low == "flat":
        return "Flat"
    if low == "ivf":
        return f"{pca}IVF{nlist_for(n)},SQ8"
    if low == "hnsw":
        return f"{pca}HNSW32,SQ8"
    return kind  # a FAISS factory string, checked when the index is made


def default_search_params(spec: str) -> str:
    """FAISS ParameterSpace string for queries: enough probes for recall@10 >= 0.95 (see docs)."""
    m = re.search(r"IVF(\d+)", spec)
    if m:
        nlist = int(m.group(1))
        return f"nprobe={min(nlist, max(16, nlist // 32))}"
    if "HNSW" in spec:
        return "efSearch=128"
    return ""


def make_index(spec: str, dim: int):
    """An empty index that takes ids (``add_with_ids``), L2 metric."""
    fs = faiss()
    try:
        index = fs.index_factory(dim, spec, fs.METRIC_L2)
    except RuntimeError as e:
        raise ValueError(f"not a FAISS index type: {spec!r} ({str(e).splitlines()[-1][:160]})") from None
    if not supports_ids(index):
        index = fs.IndexIDMap2(index)
    return index


def supports_ids(index) -> bool:
    """IVF indexes store ids themselves; Flat and HNSW need an id map."""
    fs = faiss()
    inner = index
    if isinstance(inner, fs.IndexPreTransform):
        inner = fs.downcast_index(inner.index)
    return isinstance(fs.downcast_index(inner), fs.IndexIVF)


def supports_remove(index) -> bool:
    fs = faiss()
    inner = fs.downcast_index(index)
    if isinstance(inner, fs.IndexIDMap2):
        inner = fs.downcast_index(inner.index)
    if isinstance(inner, fs.IndexPreTransform):
        inner = fs.downcast_index(inner.index)
    return isinstance(inner, (fs.IndexFlat, fs.IndexIVF))


def train_size(spec: str, n: int) -> int:
    """How many vectors to train on: ~40 per k-means cell, enough for the PCA."""
    m = re.search(r"IVF(\d+)", spec)
    need = 40 * int(m.group(1)) if m else 0
    if "PCA" in spec or "OPQ" in spec or "PQ" in spec or "SQ" in spec:
        need = max(need, 20_000)
    return min(n, max(need, 0))


#: a 4096x4096 covariance is well estimated from this many vectors; more only costs time
PCA_TRAIN = 25_000


def train_index(index, sample: np.ndarray) -> None:
    """Train on ``sample``: the PCA (if any) on its first ``PCA_TRAIN`` rows, the rest on all of it."""
    fs = faiss()
    sample = as_float32(sample)
    pre = fs.downcast_index(index.index) if isinstance(index, fs.IndexIDMap2) else index
    if isinstance(pre, fs.IndexPreTransform) and pre.chain.size() == 1 and len(sample) > PCA_TRAIN:
        vt = pre.chain.at(0)
        vt.train(as_float32(sample[:PCA_TRAIN]))
        _drop_full_eigenvectors(vt)
        reduced = vt.apply(sample)
        inner = fs.downcast_index(pre.index)
        inner.train(reduced)
        pre.is_trained = True
        if pre is not index:
            index.is_trained = True
        return
    index.train(sample)
    if isinstance(pre, fs.IndexPreTransform):
        for i in range(pre.chain.size()):
            _drop_full_eigenvectors(pre.chain.at(i))


def _drop_full_eigenvectors(vt) -> None:
    """A trained PCAMatrix keeps every d x d eigenvector (64 MiB at 4096-d); applying it needs only A and b."""
    fs = faiss()
    pca = fs.downcast_VectorTransform(vt)
    if isinstance(pca, fs.PCAMatrix):
        pca.PCAMat.clear()


def apply_search_params(index, params: str) -> None:
    if params:
        fs = faiss()
        fs.ParameterSpace().set_index_parameters(index, params)


def gpu_count() -> int:
    """GPUs FAISS can use: 0 with faiss-cpu, and 0 with faiss-gpu on a machine without one."""
    fs = faiss()
    try:
        return int(fs.get_num_gpus()) if hasattr(fs, "get_num_gpus") else 0
    except Exception:
        return 0


def to_gpu(index):
    """The index on every GPU when faiss has GPUs; the CPU index otherwise, or if it cannot move."""
    if gpu_count() == 0:
        return index, False
    fs = faiss()
    try:
        return fs.index_cpu_to_all_gpus(index), True
    except (RuntimeError, AttributeError):  # e.g. a type without a GPU implementation
        return index, False


def to_cpu(index):
    fs = faiss()
    try:
        return fs.index_gpu_to_cpu(index)
    except (RuntimeError, AttributeError):
        return index


def index_bytes(index) -> int:
    """Size of the index as FAISS serialises it (what it occupies in memory, within a few %)."""
    return int(faiss().serialize_index(index).size)


def as_float32(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x, dtype=np.float32)
