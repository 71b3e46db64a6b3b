"""The similarity index as a Python object: open, query, update, describe.

    >>> from alexnet_kit.search import SimilarityIndex
    >>> idx = SimilarityIndex.build("photos/", "photos.index", model="model.safetensors")
    >>> for hit in idx.query("cat.jpg", top=8):
    ...     print(f"{hit.score:.3f}  {hit.path}")
    >>> idx.add(["new-photos/"])          # only new and changed files go through the network
    >>> idx.info()["photos"]

A query photo that is itself in the index is left out of its own results
(and its stored vector is used, so the network does not run). The model
and feature settings are the index's own; another model or setting is
refused with :class:`~alexnet_kit.search.errors.IndexMismatch`.

A compressed (approximate) index re-ranks its candidates exactly with the
stored full vectors (:mod:`.rerank`): ``rerank=N`` candidates per query,
by default the number stored at build time (``index build --rerank``),
else :data:`~alexnet_kit.search.rerank.DEFAULT`; ``rerank=0`` turns it off.
An exact (``Flat``) index needs none.
"""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
from PIL import Image

from ..errors import AlexKitError
from ..features import FeatureExtractor, FeatureSettings, l2_normalise
from ..images import ImageSource
from . import builder, files
from . import rerank as reranking
from .errors import IndexMismatch, IndexProblem
from .factory import apply_search_params, as_float32, gpu_count, to_gpu
from .index_settings import IndexSettings
from .store import Store


@dataclass
class Hit:
    path: str
    #: higher is more similar: the cosine similarity for a cosine index, minus the distance for a Euclidean one
    score: float
    id: int
    #: Euclidean distance between the stored vectors (normalised ones for a cosine index)
    distance: float

    @property
    def name(self) -> str:
        return Path(self.path).name

    def to_dict(self) -> dict:
        return {"path": self.path, "score": self.score, "distance": self.distance, "id": self.id}


class SimilarityIndex:
    def __init__(self, root: Path, store: Store, index, model: str | os.PathLike | None = None, device: str = "cpu",
                 on_gpu: bool = False):
        self.root = root
        self.store = store
        self.index = index
        self.on_gpu = on_gpu
        self.settings = FeatureSettings.from_json(store.get("features"))
        self.dim = int(store.get("dim"))
        self.fingerprint: str = store.get("model_fingerprint")
        self.model_path = Path(model) if model else Path(store.get("model_path"))
        self.device = device
        #: candidates re-ranked per query by default (0: off); the index's stored number, else the default
        self.rerank: int = reranking.resolve(None, store.get("rerank"))
        self._extractor: FeatureExtractor | None = None
        self._lock = threading.RLock()  # the demo serves queries from several threads

    # -- opening and building --------------------------------------------

    @classmethod
    def open(cls, path: str | os.PathLike, model: str | os.PathLike | None = None, *, crops: int | None = None,
             metric: str | None = None, device: str = "cpu", verify: bool = True, gpu: bool | None = None) -> "SimilarityIndex":
        """Open an index folder; checks both files (``verify``: full checksums).

        ``model``: where the index's model is now (default: where it was when
        built; it must be the same weights). ``crops``/``metric``: say what you
        expect; anything other than the index's settings is refused. ``gpu``:
        search on the GPUs when FAISS has them (default: when it does).
        """
        root = Path(path)
        if not root.is_dir():
            raise IndexProblem(root, "no such index folder" if not root.exists() else "not an index folder")
        store = Store.open(files.store_path(root), verify=verify)
        try:
            theirs = FeatureSettings.from_json(store.get("features"))
            asked = FeatureSettings(crops=crops or theirs.crops, metric=metric or theirs.metric)
            if asked != theirs:
                raise IndexMismatch(f"{root}: built with features '{theirs.describe()}', asked for "
                                    f"'{asked.describe()}': leave the option out, or build a new index with it")
            st = files.state(root, store, verify)
            if st is files.State.BUILDING:
                ok, bad = store.count()
                raise IndexProblem(root, f"incomplete: its build stopped after {ok + bad} photos; run "
                                         f"'alexnet-kit index build PHOTOS --out {root}' again to resume it")
            if st is files.State.STALE:
                raise IndexProblem(root, f"the FAISS index is behind its store (an interrupted add or remove); "
                                         f"run 'alexnet-kit index add {root}' to finish it")
            index = files.read_index(root, store)
            record = store.get("index") or {}
            if index.ntotal != store.count()[0] or index.d != int(store.get("dim")):
                raise IndexProblem(files.faiss_path(root), f"holds {index.ntotal} vectors of {index.d} dimensions, the "
                                   f"store {store.count()[0]} of {store.get('dim')}: rebuild with 'alexnet-kit index add {root} --rebuild'")
            apply_search_params(index, record.get("params", ""))
            on_gpu = False
            if gpu or (gpu is None and gpu_count() > 0):
                index, on_gpu = to_gpu(index)
                apply_search_params(index, record.get("params", ""))
        except BaseException:
            store.close()
            raise
        return cls(root, store, index, model=model, device=device, on_gpu=on_gpu)

    @classmethod
    def build(cls, photos: Iterable[str | os.PathLike] | str | os.PathLike, out: str | os.PathLike,
              model: str | os.PathLike, **kw) -> "SimilarityIndex":
        """Index a folder (or files) into the new folder ``out``; the report is ``.last_report``."""
        if isinstance(photos, (str, os.PathLike)):
            photos = [photos]
        report = builder.build(photos, out, model, **kw)
        idx = cls.open(out, model=model, device=kw.get("device", "cpu"))
        idx.last_report = report
        return idx

    def add(self, photos: Iterable[str | os.PathLike] | None = None, **kw) -> builder.UpdateReport:
        """Take in new and changed photos (default: rescan the folders it was built from)."""
        kw.setdefault("model", self.model_path)
        return self._update(builder.add, photos, **kw)

    def remove(self, paths: Iterable[str | os.PathLike] = (), *, missing: bool = False) -> builder.UpdateReport:
        return self._update(builder.remove, paths, missing=missing)

    def _update(self, fn, *args, **kw) -> builder.UpdateReport:
        with self._lock:
            report = fn(self.root, *args, **kw)
            self.store.close()  # a rewrite (--rebuild) replaces the store's file: read the new one
            self.store = Store.open(files.store_path(self.root), verify=False)
            index = files.read_index(self.root, self.store)
            apply_search_params(index, (self.store.get("index") or {}).get("params", ""))
            if self.on_gpu:
                index, self.on_gpu = to_gpu(index)
            self.index = index
        return report

    def close(self) -> None:
        self.store.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __len__(self) -> int:
        return int(self.index.ntotal)

    # -- queries ---------------------------------------------------------

    @property
    def extractor(self) -> FeatureExtractor:
        """The index's model, loaded on the first query that needs it."""
        if self._extractor is None:
            if not self.model_path.exists():
                raise AlexKitError(f"{self.root}: its model {self.model_path} is gone: pass the same model (model=... / --model)")
            recorded = IndexSettings.from_store(self.store)
            fx = builder.index_extractor(self.model_path, recorded.extraction_precision(self.root, self.device, query=True),
                                         device=self.device, crops=self.settings.crops, metric=self.settings.metric)
            recorded.check(fx, self.model_path, self.root, query=True)
            self._extractor = fx
        return self._extractor

    def vector(self, image: ImageSource | np.ndarray) -> tuple[np.ndarray, int | None]:
        """(feature vector, the photo's id when it is in the index itself)."""
        if isinstance(image, np.ndarray):  # e.g. what a Gradio Image component hands over
            image = Image.fromarray(np.ascontiguousarray(image))
        if isinstance(image, (str, os.PathLike)):
            path = Path(image).expanduser()
            row = self.store.row(str(path.resolve())) if path.exists() else None
            if row is not None and row.ok:
                st = path.stat()
                if (st.st_size, st.st_mtime_ns) == (row.size, row.mtime_ns):
                    ids, vecs = self.store.vectors([row.id], self.dim)
                    if len(ids):
                        return vecs[0], row.id  # the network ran on it already
                return self.extractor.extract_one(image), row.id
        return self.extractor.extract_one(image), None

    def query(self, image: ImageSource | np.ndarray, top: int = 8, exclude_self: bool = True,
              rerank: int | None = None) -> list[Hit]:
        """The ``top`` nearest photos to ``image`` (a path, bytes, PIL image or uint8 HxWx3 array), best first.

        ``rerank``: candidates re-ranked exactly (None: the index's default, 0: off; see the module).
        Raises :class:`~alexnet_kit.errors.ImageError` if the photo cannot be read.
        """
        with self._lock:
            vec, own = self.vector(image)  # normalised already (a stored vector, or the extractor's)
            return self._search(as_float32(vec.reshape(1, -1)), top, {own} if (exclude_self and own is not None) else set(),
                                rerank)

    @property
    def exact(self) -> bool:
        """Whether FAISS itself searches exactly (a Flat index): nothing to re-rank."""
        return (self.store.get("index") or {}).get("spec") == "Flat"

    def query_vector(self, vector: np.ndarray, top: int = 8, exclude: Iterable[int] = (),
                     rerank: int | None = None) -> list[Hit]:
        """The ``top`` nearest photos to a feature vector; ``exclude``: ids to leave out; ``rerank``: as in
        :meth:`query`."""
        q = as_float32(np.asarray(vector).reshape(1, -1))
        if q.shape[1] != self.dim:
            raise ValueError(f"a {q.shape[1]}-d vector for a {self.dim}-d index")
        if self.settings.normalised:
            q = l2_normalise(q)
        return self._search(q, top, set(exclude), rerank)

    def _search(self, q: np.ndarray, top: int, exclude: set[int], rerank: int | None) -> list[Hit]:
        if top < 1:
            raise ValueError("top must be at least 1")
        n = 0 if self.exact else reranking.resolve(rerank, self.rerank)
        k = min(max(top, n) + len(exclude), max(1, len(self)))
        with self._lock:
            d2, ids = self.index.search(q, k)
            pairs = [(int(i), float(d)) for i, d in zip(ids[0], d2[0]) if i >= 0 and int(i) not in exclude]
            if n:
                pairs = reranking.rerank(self.store, self.dim, q[0], [i for i, _ in pairs[:n]], top)
            pairs = pairs[:top]
            paths = self.store.paths(i for i, _ in pairs)
        hits = []
        for i, d in pairs:
            dist = float(np.sqrt(max(d, 0.0)))
            score = 1.0 - max(d, 0.0) / 2.0 if self.settings.normalised else -dist
            hits.append(Hit(paths.get(i, f"<id {i}>"), score, i, dist))
        return hits

    # -- description -----------------------------------------------------

    def info(self) -> dict:
        with self._lock:
            s = self.store.settings()
            ok, bad = self.store.count()
            vectors = {"layout": self.store.layout, "dtype": "float16" if self.store.shards else "float32",
                       "bytes": self.store.vector_bytes(), "dead_rows": self.store.dead_rows()}
        rec = s.get("index") or {}
        return {
            "path": str(self.root),
            "photos": ok,
            "unreadable": bad,
            "model": s.get("model_path"),
            "model_fingerprint": s.get("model_fingerprint"),
            "model_trained": s.get("model_trained"),
            "features": self.settings.describe(),
            "feature_settings": {"layer": self.settings.layer, "crops": self.settings.crops, "metric": self.settings.metric},
            "dim": self.dim,
            "index_type": rec.get("spec"),
            "index_type_requested": s.get("index_type"),
            "search_params": rec.get("params"),
            "bytes_per_photo": rec.get("bytes_per_vector"),
            "index_bytes": rec.get("bytes"),
            "store_bytes": files.store_path(self.root).stat().st_size + vectors["bytes"],
            "vectors": vectors,
            "lists_on_disk": rec.get("lists"),
            "rerank": 0 if rec.get("spec") == "Flat" else self.rerank,
            "exact": rec.get("spec") == "Flat",
            "on_gpu": self.on_gpu,
            "roots": s.get("roots"),
            "content_version": s.get("content_version"),
        }

    def unreadable(self, limit: int = 20) -> list[tuple[str, str]]:
        with self._lock:
            return self.store.errors(limit)
