"""Exact re-ranking: an approximate index proposes candidates, the full vectors order them.

A compressed index (PCA + IVF + 8-bit codes) ranks by approximate
distances: the PCA alone loses about 5% of the true top 10 at a million
photos (``docs/benchmarks.md``). The store keeps every photo's full vector
(float16 shards), so a query asks FAISS for ``n`` candidates instead of
``top``, reads their ``n`` vectors from the shards and orders them by their
exact distance to the query; the true top 10 are nearly always among the
first hundred approximate ones. It costs one small read per candidate
(8 KiB for a 4096-d photo, from the page cache or the disk) and a
``n x dim`` distance computation: about a millisecond for 100 candidates.

Distances are the stored float16 values' differences to the query (in
float32, where they are exact to a relative 2^-24) squared and summed in
float64, so the order is that of brute force over the stored vectors, ties
broken by id.
"""
from __future__ import annotations

import numpy as np

from .store import Store

#: candidates re-ranked per query when neither the query nor the index says otherwise (measured at
#: 1M and 3M photos in docs/benchmarks.md, "Re-ranking and the float16 store")
DEFAULT = 100


def rerank(store: Store, dim: int, query: np.ndarray, candidates: list[int], top: int) -> list[tuple[int, float]]:
    """The ``top`` of ``candidates`` nearest to ``query`` (1-d) by exact squared L2: [(id, d2)], best first."""
    ids, diff = store.vectors(candidates, dim)
    if not len(ids):
        return []
    diff -= np.asarray(query, np.float32).reshape(-1)  # a float16 value minus a float32 one: exact to 2^-24
    d2 = np.einsum("ij,ij->i", diff, diff, dtype=np.float64)
    order = np.lexsort((ids, d2))[:top]
    return [(int(ids[i]), float(d2[i])) for i in order]


def resolve(asked: int | None, stored: int | None) -> int:
    """How many candidates to re-rank: the query's number, else the index's stored one, else :data:`DEFAULT`."""
    n = asked if asked is not None else stored if stored is not None else DEFAULT
    if n < 0:
        raise ValueError("rerank must be 0 (off) or a number of candidates")
    return int(n)
