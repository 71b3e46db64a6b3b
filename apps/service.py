"""What the demo does, without the web page: load, classify, find similar, draw.

:class:`DemoService` holds one model (a checkpoint or any artifact the
engines load) and, optionally, a similarity index. The Gradio app
(:mod:`alexnet_kit.apps.demo`) is a thin layer over it; the load benchmark
calls it directly as the no-server baseline.
"""
from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from alexnet_kit.classify import Classifier, Label
from alexnet_kit.engines import Selection, choose
from alexnet_kit.errors import AlexKitError, ImageError
from alexnet_kit.features import FeatureExtractor
from alexnet_kit.search import Hit, IndexMismatch, SimilarityIndex
from alexnet_kit.search.index_settings import IndexSettings

from .figures import crops_strip, kernel_grid

NO_INDEX = ("No similarity index loaded: build one with 'alexnet-kit index build ~/Pictures' (the default "
            "index, which the demo then opens), or start the demo with --index PATH.")


class PageHit(Hit):
    """A :class:`~alexnet_kit.search.Hit` as the page's JSON shows it."""

    def to_dict(self) -> dict:
        # "file", not "path": Gradio's client takes any {"path": ...} for a file to download
        return {"file": self.path, "score": self.score}


class DemoService:
    def __init__(self, classifier: Classifier, index: "IndexThread | None" = None, model_path: str | os.PathLike | None = None,
                 index_path: str | os.PathLike | None = None):
        self.classifier = classifier
        #: what runs the model and why
        self.selection: Selection | None = classifier.selection
        self.meta = classifier.meta
        self.index = index
        self.model_path = Path(model_path) if model_path else None
        self.index_path = Path(index_path) if index_path else None
        self._folders: list[Path] = []
        self.features = None
        if index is not None:
            # §6.1 features from the classifier's own engine: the model is loaded once
            self.features = FeatureExtractor(classifier.engine, crops=index.settings.crops, metric=index.settings.metric)
            self._folders = sorted({p.resolve() for p in index.roots})
        self._kernels: np.ndarray | None = None
        self._kernels_done = False
        self._lock = threading.Lock()

    @classmethod
    def load(cls, model: str | os.PathLike, index: str | os.PathLike | None = None, device: str = "cpu",
             engine: str | None = None, precision: str | None = None, log=None) -> "DemoService":
        """Open the model (ten-crop classifier) and the index, if one is given.

        ``engine``/``precision``: as :meth:`Classifier.load`; with an index,
        ``auto`` only picks the precision its vectors were computed in (int8
        features are another model's; fp32 where the index's bf16 cannot run
        natively here: within the gate's cosine).
        """
        allow = None
        if index and Path(index).is_dir():
            try:
                recorded = IndexSettings.read(index)
            except AlexKitError:
                recorded = None  # not readable as an index: opening it below says why
            if recorded is not None:
                allow = (recorded.extraction_precision(index, device, query=True),)
        selection = choose(model, engine, precision, device=device, batch=10, allow=allow, log=log)
        classifier = Classifier(selection, crops=10)
        idx = IndexThread(index, classifier, model, device) if index else None
        return cls(classifier, idx, model, index)

    # -- facts for the page ----------------------------------------------

    @property
    def trained(self) -> bool:
        return self.meta.trained

    @property
    def has_index(self) -> bool:
        return self.index is not None

    def index_size(self) -> int:
        return 0 if self.index is None else len(self.index)

    def photo_folders(self) -> list[Path]:
        """The folders whose photos the index returns: the only files the demo may serve."""
        return list(self._folders)

    def servable(self, path: str | os.PathLike) -> bool:
        """Inside the index's folders and still on disk."""
        p = Path(path).resolve()
        return p.is_file() and any(p == r or r in p.parents for r in self._folders)

    # -- the work ----------------------------------------------------------

    def read_photo(self, path: str | os.PathLike, name: str | None = None) -> np.ndarray:
        """An uploaded file as the network's uint8 (256, 256, 3) photo.

        Raises :class:`ImageError` naming ``name`` (what the user called the
        file) rather than the server's temporary path.
        """
        try:
            return self.meta.preprocess.load(path)
        except ImageError as e:
            raise ImageError(name or e.path, e.problem) from None

    def classify(self, photo: np.ndarray, top: int = 5) -> list[Label]:
        """§4.1: the softmax averaged over ten crops, top ``top`` classes."""
        probs = self.classifier.probabilities(photo[None])[0]
        return self.classifier.top_labels(probs, top)

    def similar(self, path: str | os.PathLike | bytes, top: int = 8, name: str | None = None) -> list[PageHit]:
        """The ``top`` photos of the index closest to the uploaded photo (§6.1, fc7).

        Hits whose file has gone since indexing, or that lie outside the
        folders the demo serves, are left out (a few spares are asked for).
        """
        if self.index is None:
            raise AlexKitError(NO_INDEX)
        photo = self.read_photo(path, name)
        vector = self.features.features(photo[None])[0]
        hits = self.index.query_vector(vector, top + 4)
        return [PageHit(h.path, float(h.score), h.id, h.distance) for h in hits if self.servable(h.path)][:top]

    def crops(self, photo: np.ndarray) -> np.ndarray:
        return crops_strip(photo, self.meta.preprocess)

    def close(self) -> None:
        if self.index is not None:
            self.index.close()

    def kernels(self) -> np.ndarray | None:
        """Figure 3 for this model, or None where the engine exposes no weights."""
        with self._lock:
            if not self._kernels_done:
                w = first_layer_weight(self.classifier.engine, self.model_path)
                self._kernels = None if w is None else kernel_grid(w, self.meta.config.towers)
                self._kernels_done = True
        return self._kernels


def first_layer_weight(engine, path: str | os.PathLike | None = None):
    """conv1's (K, 3, 11, 11) weight, or None where the model file does not expose it.

    A checkpoint's torch model has it; an fp32 ONNX artifact keeps it as the
    initialiser ``conv1.weight``; an int8 one holds only quantised weights,
    and other artifacts are opaque, so the page says "not available".
    """
    model = getattr(engine, "model", None)
    w = getattr(getattr(model, "conv1", None), "weight", None)
    if w is not None and hasattr(w, "detach"):
        return w.detach().cpu()
    if path is not None and Path(path).suffix.lower() == ".onnx":
        try:
            import onnx  # defers onnx, an optional dependency
            from onnx import numpy_helper  # defers onnx

            graph = onnx.load(str(path), load_external_data=False).graph
        except Exception:  # no onnx package, or an unreadable file: the engine already loaded it, so just skip
            return None
        for init in graph.initializer:
            if init.name.endswith("conv1.weight") and len(init.dims) == 4 and init.dims[1] == 3:
                return numpy_helper.to_array(init).astype(np.float32)
    return None


# -- the similarity index ----------------------------------------------------

class IndexThread:
    """A :class:`~alexnet_kit.search.SimilarityIndex` used from one thread of its own.

    The index keeps a SQLite connection, which may only be used by the
    thread that opened it, while Gradio answers each request on a worker
    thread of its pool. So the index is opened, queried and closed on one
    dedicated thread, and callers wait for it; queries are milliseconds
    next to the forward pass, so the serialisation costs nothing.
    """

    def __init__(self, path: str | os.PathLike, classifier: Classifier, model: str | os.PathLike, device: str = "cpu"):
        self.path = Path(path)
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="similarity-index")
        try:
            self.index = self._call(self._open, path, classifier, model, device)
        except BaseException:
            self._pool.shutdown()
            raise
        self.settings = self.index.settings
        self.roots = self._call(index_roots, self.index)

    def _call(self, fn, *args):
        return self._pool.submit(fn, *args).result()

    @staticmethod
    def _open(path, classifier: Classifier, model, device):
        """Open the index and make sure its vectors came from this very model."""
        index = SimilarityIndex.open(path, model=model, device=device)
        ours = classifier.engine.fingerprint
        if index.fingerprint != ours:
            index.close()
            raise IndexMismatch(f"{path}: built with model {index.fingerprint[:12]}, but {model} is model {ours[:12]}: "
                                "its features are not comparable; start the demo with the index's model, or build an index for this one")
        return index

    def query_vector(self, vector: np.ndarray, top: int):
        return self._call(self.index.query_vector, vector, top)

    def __len__(self) -> int:
        return self._call(len, self.index)

    def close(self) -> None:
        self._call(self.index.close)
        self._pool.shutdown()


def index_roots(index) -> list[Path]:
    """The folders (or single files) the index was built from, and those of any photo outside them.

    Photos added one by one from elsewhere are outside the recorded roots;
    their own folders are added so the gallery can show them.
    """
    roots = [Path(r) for r in (index.info().get("roots") or [])]
    out = set(roots)
    for path in index.store.rows():
        p = Path(path)
        if not any(p == r or r in p.parents for r in roots):
            out.add(p.parent)
    return sorted(out)
