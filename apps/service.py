"""What the demo does, without the web page: load, classify, find similar, draw.

:class:`DemoService` holds one model (a checkpoint or any artifact the
engines load) and, optionally, a similarity index. The Gradio app
(:mod:`alexnet_kit.apps.demo`) is a thin layer over it; the load benchmark
calls it directly as the no-server baseline.
"""
from __future__ import annotations

import contextlib
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from alexnet_kit import explain as explaining
from alexnet_kit.checkpoint import read_meta
from alexnet_kit.classify import Classifier, Label
from alexnet_kit.engines import Engine, Selection, choose
from alexnet_kit.errors import AlexKitError, ImageError
from alexnet_kit.explain import DEFAULT_METHOD, METHODS, Explainer, Explanation, MethodNeedsCheckpoint, check_method
from alexnet_kit.explain.contact_sheet import layer_sheet
from alexnet_kit.explain.drawing import overlay
from alexnet_kit.explain.units import UnitTable, checkpoint_for
from alexnet_kit.features import FeatureExtractor
from alexnet_kit.images import ImageSource, source_name
from alexnet_kit.search import Hit, IndexMismatch, SimilarityIndex
from alexnet_kit.search.index_settings import IndexSettings

from .figures import crops_strip, kernel_grid

NO_INDEX = ("No similarity index loaded: build one with 'alexnet-kit index build ~/Pictures' (the default "
            "index, which the demo then opens), or start the demo with --index PATH.")
#: the layers whose units the page shows (Zeiler & Fergus 2013, Figure 2): every map of these
UNIT_LAYERS = ("conv1", "conv2", "conv3", "conv4", "conv5", "pool5")
#: photos per unit in a layer's grid
UNIT_TOP = 4


class PageHit(Hit):
    """A :class:`~alexnet_kit.search.Hit` as the page's JSON shows it."""

    def to_dict(self) -> dict:
        # "file", not "path": Gradio's client takes any {"path": ...} for a file to download
        return {"file": self.path, "score": self.score}


class DemoService:
    def __init__(self, classifier: Classifier, index: "IndexThread | None" = None, model_path: str | os.PathLike | None = None,
                 index_path: str | os.PathLike | None = None, device: str = "cpu"):
        self.classifier = classifier
        self.device = device
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
        self._explainer: Explainer | None = None  # the last method's: a gradient method keeps a copy of the model
        self._explain_lock = threading.Lock()
        self._units_engine: Engine | None = None
        self._unit_grids: dict[str, Image.Image] = {}
        self._units_lock = threading.Lock()

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
        return cls(classifier, idx, model, index, device)

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

    # -- explanations (Zeiler & Fergus 2013; Selvaraju et al. 2017; Sundararajan et al. 2017) ----------

    def explain_problem(self) -> str | None:
        """One line when nothing can be explained here (Captum is not installed), else None."""
        try:
            explaining.require_captum()
        except AlexKitError as e:
            return str(e)
        return None

    def _explained_file(self) -> Path | None:
        """The file the engine runs, whose suffix says whether gradients exist (as :class:`Explainer` decides)."""
        s = self.classifier.engine.selection
        return Path(s.path) if s is not None else self.model_path

    def explain_methods(self) -> list[str]:
        """The methods that work on this model file: all on a checkpoint, occlusion alone on an exported artifact."""
        works = []
        for m in METHODS:
            try:
                check_method(self._explained_file(), m)
            except MethodNeedsCheckpoint:
                continue
            works.append(m)
        return works

    def default_method(self) -> str:
        works = self.explain_methods()
        return DEFAULT_METHOD if DEFAULT_METHOD in works else works[0]

    def methods_note(self) -> str | None:
        """One line on why some methods are not offered (None where every method works)."""
        works = self.explain_methods()
        missing = [m for m in METHODS if m not in works]
        if not missing:
            return None
        name = self._explained_file().name if self._explained_file() else "this model"
        return (f"Only {', '.join(works)} is offered: {', '.join(missing)} need the gradients of a checkpoint "
                f"(.safetensors), and {name} is an exported artifact, which runs forward passes only.")

    def _explainer_for(self, method: str) -> Explainer:
        """An :class:`Explainer` over the classifier's own engine (the model is never loaded again); the last one is kept."""
        explaining.require_captum()
        if self._explainer is None or self._explainer.method != method:
            self._explainer = None  # a gradient method's copy of the model goes before the next is made
            self._explainer = Explainer(self.classifier.engine, method)
        return self._explainer

    def explanation(self, photo: ImageSource, method: str = DEFAULT_METHOD, name: str | None = None) -> Explanation:
        """The map of the central crop's most probable class by ``method``."""
        with self._explain_lock, _named(photo, name):
            return self._explainer_for(method).explain(photo, top=1, name=name)[0]

    def explain(self, photo: ImageSource, method: str = DEFAULT_METHOD, name: str | None = None) -> Image.Image:
        """The crop and the crop under its map for the top class, side by side with the caption."""
        e = self.explanation(photo, method, name)
        return overlay(e.crop, e.heat, e.caption())

    def why_similar(self, photo: ImageSource, neighbour: str | os.PathLike, method: str = DEFAULT_METHOD,
                    name: str | None = None) -> Image.Image:
        """The regions of ``photo`` that drive its fc7 cosine to ``neighbour``, a photo of the index's folders."""
        if self.index is None:
            raise AlexKitError(NO_INDEX)
        if not self.servable(neighbour):
            raise AlexKitError(f"{neighbour}: not a photo in the index's folders; only those can be compared")
        with self._explain_lock, _named(photo, name):
            e = self._explainer_for(method).explain_similar(photo, neighbour, name=name, other_name=Path(neighbour).name)
        return overlay(e.crop, e.heat, e.caption())

    # -- units (Zeiler & Fergus 2013, Figure 2) ---------------------------------------

    def _units_checkpoint(self) -> Path | None:
        """None where the engine computes every map itself (a checkpoint's); else the checkpoint with the
        same weights beside the artifact, or one line saying the units need it."""
        engine = self.classifier.engine
        if set(UNIT_LAYERS) <= set(engine.feature_layers):
            return None
        model = self.model_path or self._explained_file()
        found = None if model is None else checkpoint_for(model)  # the checkpoint beside an artifact
        if found is None or found.suffix.lower() != ".safetensors":
            where = f"{model.with_suffix('.safetensors').name} beside {model.name}" if model else "a .safetensors file"
            raise AlexKitError(f"Units need the checkpoint: an exported artifact computes fc7 and fc8 only; "
                               f"put its checkpoint ({where}) there and restart the demo.")
        weights = read_meta(found)[1].get("weights_sha256", "")
        envelope = getattr(engine, "envelope", None)
        wanted = getattr(envelope, "source_fingerprint", "") or engine.fingerprint
        if weights != wanted:
            raise AlexKitError(f"Units need the checkpoint: {found} holds other weights ({weights[:12]}) than "
                               f"{model.name} ({wanted[:12]}).")
        return found

    def units_problem(self) -> str | None:
        """One line when the page cannot show units (no index, or no checkpoint behind an artifact), else None."""
        if self.index is None:
            return "Units need a similarity index, whose photos they are ranked over: " + NO_INDEX.split(": ", 1)[1]
        try:
            self._units_checkpoint()
        except AlexKitError as e:
            return str(e)
        return None

    def _engine_for_units(self) -> Engine:
        """The classifier's engine where it computes the maps; else the checkpoint's torch engine, opened once."""
        checkpoint = self._units_checkpoint()
        if checkpoint is None:
            return self.classifier.engine
        if self._units_engine is None:
            self._units_engine = choose(checkpoint, "torch", "fp32", device=self.device).open()
        return self._units_engine

    def unit_grid(self, layer: str = "conv5", top: int = UNIT_TOP) -> Image.Image:
        """A tile per unit of ``layer``: the index's ``top`` photos that excite it most, cut to its receptive field.

        The first call for a layer runs the table's pass over the index's photos and stores it in the
        index folder (``units/``); the picture is kept for later calls.
        """
        if self.index is None:
            raise AlexKitError(NO_INDEX)
        if layer not in UNIT_LAYERS:
            raise AlexKitError(f"unknown layer {layer!r}: one of {', '.join(UNIT_LAYERS)}")
        with self._units_lock:
            if layer not in self._unit_grids:
                engine = self._engine_for_units()
                table = UnitTable.of(self.index.path, engine, layer)

                def best(index):  # on the index's thread: its SQLite store may only be used there
                    table.update(index.store)
                    return {u: table.top(index.store, u, top) for u in range(table.units)}

                tops = self.index.run(best)
                if not any(tops.values()):
                    raise AlexKitError(f"{self.index.path}: no readable photos in the index")
                self._unit_grids[layer] = layer_sheet(tops, engine.meta, f"{layer}: {table.units} units, top {top} photos each")
            return self._unit_grids[layer]


@contextlib.contextmanager
def _named(photo: ImageSource, name: str | None):
    """An unreadable ``photo`` reported under ``name`` (what the user called it), not the server's temporary path."""
    try:
        yield
    except ImageError as e:
        if name and e.path == source_name(photo):
            raise ImageError(name, e.problem) from None
        raise


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

    def run(self, fn, *args):
        """``fn(index, *args)`` on the index's own thread, where its SQLite store may be used; its result."""
        return self._call(fn, self.index, *args)

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
