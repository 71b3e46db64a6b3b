"""Similarity search over fc7 features (§6.1): a FAISS index plus a SQLite store.

    >>> from alexnet_kit.search import SimilarityIndex
    >>> idx = SimilarityIndex.open("photos.index")
    >>> [(h.path, round(h.score, 3)) for h in idx.query("cat.jpg", top=8)]

The command line is ``alexnet-kit index build|add|remove|info`` and
``alexnet-kit similar``; ``docs/search.md`` explains the design and numbers.
This package is runtime: it never imports the train, export or apps stages.
"""
from __future__ import annotations

from .builder import UpdateReport, walk_photos
from .errors import IndexMismatch, IndexProblem
from .index import Hit, SimilarityIndex

__all__ = ["SimilarityIndex", "Hit", "UpdateReport", "IndexMismatch", "IndexProblem", "walk_photos"]
