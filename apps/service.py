"""What the demo does, without the web page: load, classify, find similar, draw.

:class:`DemoService` holds one model (a checkpoint or any artifact the
engines load) and, optionally, a similarity index. The Gradio app
(:mod:`alexnet_kit.apps.demo`) is a thin layer over it; the load benchmark
calls it directly as the no-server baseline.
"""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from alexnet_kit.classify import Classifier, Label
from alexnet_kit.errors import AlexKitError, ImageError
from alexnet_kit.images import load_square

from .figures import crops_strip, kernel_grid

NO_INDEX = ("No similarity index loaded: start the demo with --index PATH "
            "(an index built by alexnet-kit's similarity search from a folder of photos).")


@dataclass
class Hit:
    """One similar photo: where it is and how close (higher is more similar)."""

    path: str
    score: float

    @property
    def name(self) -> str:
        return Path(self.path).name

    def to_dict(self) -> dict:
        return {"path": self.path, "score": self.score}


class DemoService:
    def __init__(self, classifier: Classifier, index=None, model_path: str | os.PathLike | None = None,
                 index_path: str | os.PathLike | None = None):
        self.classifier = classifier
        self.meta = classifier.meta
        self.index = index
        self.model_path = Path(model_path) if model_path else None
        self.index_path = Path(index_path) if index_path else None
        self._kernels: np.ndarray | None = None
        self._kernels_done = False
        self._lock = threading.Lock()

    @classmethod
    def load(cls, model: str | os.PathLike, index: str | os.PathLike | None = None, device: str = "cpu") -> "DemoService":
        """Open the model (ten-crop classifier) and the index, if one is given."""
        classifier = Classifier.load(model, device=device, crops=10)
        idx = open_index(index, classifier) if index else None
        return cls(classifier, idx, model, index)

    # -- facts for the page ----------------------------------------------

    @property
    def trained(self) -> bool:
        return self.meta.trained

    @property
    def has_index(self) -> bool:
        return self.index is not None

    def photo_folders(self) -> list[Path]:
        """The folders whose photos the index returns: the only files the demo may serve."""
        if self.index is None:
            return []
        roots = index_photo_folders(self.index)
        return sorted({Path(r).resolve() for r in roots})

    # -- the work ----------------------------------------------------------

    def read_photo(self, path: str | os.PathLike, name: str | None = None) -> np.ndarray:
        """An uploaded file as the network's uint8 (256, 256, 3) photo.

        Raises :class:`ImageError` naming ``name`` (what the user called the
        file) rather than the server's temporary path.
        """
        try:
            return load_square(path, self.meta.preprocess.resize)
        except ImageError as e:
            raise ImageError(name or e.path, e.problem) from None

    def classify(self, photo: np.ndarray, top: int = 5) -> list[Label]:
        """§4.1: the softmax averaged over ten crops, top ``top`` classes."""
        probs = self.classifier.probabilities(photo[None])[0]
        return self.classifier.top_labels(probs, top)

    def similar(self, path: str | os.PathLike, top: int = 8, name: str | None = None) -> list[Hit]:
        """The ``top`` photos of the index closest to the photo at ``path``."""
        if self.index is None:
            raise AlexKitError(NO_INDEX)
        photo = self.read_photo(path, name)  # the clear error for a bad upload comes first
        return query_index(self.index, path, photo, top)

    def crops(self, photo: np.ndarray) -> np.ndarray:
        return crops_strip(photo, self.meta.preprocess)

    def kernels(self) -> np.ndarray | None:
        """Figure 3 for this model, or None where the engine exposes no weights."""
        with self._lock:
            if not self._kernels_done:
                w = first_layer_weight(self.classifier.engine)
                self._kernels = None if w is None else kernel_grid(w, self.meta.config.towers)
                self._kernels_done = True
        return self._kernels


def first_layer_weight(engine):
    """conv1's (96, 3, 11, 11) weight from an engine that runs a torch model, else None."""
    model = getattr(engine, "model", None)
    conv1 = getattr(model, "conv1", None)
    w = getattr(conv1, "weight", None)
    return None if w is None else w.detach().cpu()


# -- the similarity index ----------------------------------------------------
# Kept in these three functions so the rest of the demo does not depend on
# the search module's exact API.

def open_index(path: str | os.PathLike, classifier: Classifier):
    from alexnet_kit.search import SimilarityIndex

    return SimilarityIndex.open(path)


def index_photo_folders(index) -> list[str]:
    return list(index.photo_folders())


def query_index(index, path, photo: np.ndarray, top: int) -> list[Hit]:
    return [Hit(str(h.path), float(h.score)) for h in index.query(path, top=top)]
