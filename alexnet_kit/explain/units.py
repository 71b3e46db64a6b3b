"""What one unit of a layer responds to: the photos of an index that excite it most (Zeiler & Fergus 2013, Figure 2).

For a layer with maps (conv1 ... pool5) a unit is one map: its activation
on a photo is the map's maximum over positions on the central crop, and the
position of that maximum says where in the crop it fired; the unit's
receptive field there (:func:`~alexnet_kit.named_layers.receptive_field`) is
the patch shown. For fc6, fc7 and fc8 a unit is one neuron (fc8: a class's
logit) and the patch is the whole crop.

One batched pass over the index's photos computes every unit's maximum at
once and stores it in ``INDEX/units/<model>-<layer>/``, in chunks written
atomically, so a stopped pass (SIGINT, SIGTERM) resumes where it stopped
and ``index add`` extends it to the photos it adds (:func:`refresh`). A
table is tied to one model (its fingerprint) and one layer; a photo whose
file changed since (another checksum) is computed again.
"""
from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..batching import iter_batches
from ..engines import Engine
from ..errors import AlexKitError
from ..fsutil import atomic_path
from ..interrupt import StopOnSignal
from ..named_layers import MAP_LAYERS, layer_shapes, receptive_field
from ..search.store import Store

CHUNK = 512
BATCH = 32


@dataclass
class TopPhoto:
    path: str
    activation: float
    location: tuple[int, int] | None  # (y, x) in the unit's map; None for a vector layer
    box: tuple[int, int, int, int]  # (left, top, right, bottom) in the central crop


def checkpoint_for(model: str | os.PathLike) -> Path | None:
    """The checkpoint whose maps the units need: ``model`` itself if it is one, else the ``.safetensors`` beside
    the artifact exported from it (X.onnx, X.int8.onnx, X.ts, X.pt2 -> X.safetensors), or None."""
    model = Path(model)
    if model.suffix.lower() == ".safetensors":
        return model if model.is_file() else None
    name = model.name
    for suffix in (".onnx", ".ts", ".pt2", ".int8"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
    beside = model.with_name(name + ".safetensors")
    return beside if beside.is_file() else None


def table_dir(index: str | os.PathLike, fingerprint: str, layer: str) -> Path:
    return Path(index) / "units" / f"{fingerprint[:16]}-{layer}"


class UnitTable:
    """Each photo's maximum (and where) for every unit of one layer, for the photos of one index."""

    def __init__(self, folder: Path, engine: Engine, layer: str, model: str | os.PathLike | None = None):
        """``model``: the file ``engine`` runs, recorded so that ``index add`` can extend the table."""
        self.folder, self.engine, self.layer = Path(folder), engine, layer
        if model is None and engine.selection is not None:
            model = engine.selection.path
        self.model = str(Path(model).resolve()) if model else ""
        self.shape = layer_shapes(engine.meta.config)[layer]
        self.units = self.shape[0]
        if layer not in engine.feature_layers:
            path = engine.selection.path if engine.selection else "this model"
            raise AlexKitError(f"{path}: the units of {layer} need a checkpoint (.safetensors); an exported artifact "
                               f"computes {', '.join(engine.feature_layers)} only")

    @classmethod
    def of(cls, index: str | os.PathLike, engine: Engine, layer: str, model: str | os.PathLike | None = None) -> "UnitTable":
        return cls(table_dir(index, engine.fingerprint, layer), engine, layer, model)

    # -- the stored chunks --------------------------------------------------

    def header(self) -> dict:
        return {"fingerprint": self.engine.fingerprint, "layer": self.layer, "shape": list(self.shape), "model": self.model}

    def _open(self) -> None:
        state = self.folder / "table.json"
        if state.exists():
            theirs = json.loads(state.read_text())
            if {k: theirs.get(k) for k in ("fingerprint", "layer", "shape")} != {k: self.header()[k] for k in ("fingerprint", "layer", "shape")}:
                raise AlexKitError(f"{self.folder}: holds another model's or layer's units; delete the folder to start over")
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(state) as tmp:
            tmp.write_text(json.dumps(self.header()))

    def read(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
        """(ids, maxima (N, units) float32, where (N, units) int32 flat positions, checksums), the later of
        two rows of one photo winning."""
        ids, maxima, where, sums = [], [], [], []
        for f in sorted(self.folder.glob("chunk-*.npz")):
            with np.load(f) as z:
                ids.append(z["ids"]); maxima.append(z["maxima"]); where.append(z["where"]); sums += z["checksums"].tolist()
        if not ids:
            return np.empty(0, np.int64), np.empty((0, self.units), np.float32), np.empty((0, self.units), np.int32), []
        ids_a, max_a, where_a = np.concatenate(ids), np.concatenate(maxima), np.concatenate(where)
        last = {int(i): k for k, i in enumerate(ids_a)}  # a photo computed again: its latest row
        keep = np.array(sorted(last.values()), dtype=np.int64)
        return ids_a[keep], max_a[keep], where_a[keep], [sums[k] for k in keep]

    def _write(self, n: int, ids, maxima, where, sums) -> None:
        with atomic_path(self.folder / f"chunk-{n:06d}.npz") as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, ids=np.asarray(ids, np.int64), maxima=np.asarray(maxima, np.float32).reshape(-1, self.units),
                         where=np.asarray(where, np.int32).reshape(-1, self.units), checksums=np.asarray(sums, dtype=str))

    # -- the pass -------------------------------------------------------------

    def activations(self, photos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """uint8 (N, R, R, 3) photos -> (maxima, flat positions), each (N, units), on the central crop."""
        x = self.engine.meta.preprocess.crops(photos, 1)
        a = self.engine.activations(x, [self.layer])[self.layer].float()
        if a.ndim == 2:
            return a.numpy(), np.zeros(a.shape, np.int32)
        m, w = a.flatten(2).max(2)
        return m.numpy(), w.to(torch.int32).numpy()

    def update(self, store: Store, progress: bool = False) -> int:
        """Compute the photos of ``store`` not yet in the table (new, or changed since); returns how many."""
        self._open()
        done_ids, _, _, sums = self.read()
        done = dict(zip(done_ids.tolist(), sums))
        todo = [r for r in store.rows().values() if r.ok and done.get(r.id) != r.checksum]
        if not todo:
            return 0
        n = len(list(self.folder.glob("chunk-*.npz")))
        bar = tqdm(total=len(todo), unit="photo", desc=f"{self.layer} units", disable=not progress, file=sys.stderr,
                   dynamic_ncols=True)
        buf: list = [[], [], [], []]
        computed = 0
        with bar, StopOnSignal("finishing this batch and saving the units done so far") as stop:
            size, mode = self.engine.meta.preprocess.resize, self.engine.meta.preprocess.resize_mode
            rows = {r.path: r for r in todo}
            for entries, photos in iter_batches([r.path for r in todo], BATCH, size, mode=mode):
                ok = [rows[e.name] for e in entries if e.error is None]
                if ok:
                    m, w = self.activations(photos)
                    for part, values in zip(buf, ([r.id for r in ok], m, w, [r.checksum for r in ok])):
                        part.extend(values)
                computed += len(entries)
                bar.update(len(entries))
                if len(buf[0]) >= CHUNK or stop.requested:
                    self._write(n, *buf)
                    n, buf = n + 1, [[], [], [], []]
                if stop.requested:
                    break
            if buf[0]:
                self._write(n, *buf)
            stop.raise_if_requested(f"stopped; the units of {computed} of {len(todo)} photos are saved in "
                                    f"{self.folder}: run the same command again to resume")
        return computed

    # -- the answer -------------------------------------------------------------

    def top(self, store: Store, unit: int, k: int = 9) -> list[TopPhoto]:
        """The ``k`` photos of the index with the highest maximum of ``unit``, highest first."""
        if not 0 <= unit < self.units:
            raise AlexKitError(f"{self.layer} has units 0 to {self.units - 1}, not {unit}")
        ids, maxima, where, sums = self.read()
        live = store.rows()
        current = {r.id: r for r in live.values() if r.ok}
        keep = np.array([i for i, (pid, s) in enumerate(zip(ids.tolist(), sums))
                         if pid in current and current[pid].checksum == s], dtype=np.int64)
        if len(keep) == 0:
            return []
        col = maxima[keep, unit]
        order = keep[np.argsort(-col, kind="stable")[:k]]
        return [self._top_photo(current[int(ids[i])].path, float(maxima[i, unit]), int(where[i, unit])) for i in order]

    def _top_photo(self, path: str, value: float, flat: int) -> TopPhoto:
        crop = self.engine.meta.preprocess.crop
        if self.layer not in MAP_LAYERS:
            return TopPhoto(path, value, None, (0, 0, crop, crop))
        _, h, w = self.shape
        y, x = divmod(flat, w)
        box = receptive_field(self.engine.meta.config, self.layer).box(y, x, crop)
        return TopPhoto(path, value, (y, x), box)


def refresh(index: str | os.PathLike, store: Store, device: str = "cpu", progress: bool = False) -> list[str]:
    """Bring every unit table of ``index`` up to date with its photos (after ``index add``); the layers done."""
    from ..engines import load_engine  # a table's own model

    done = []
    for state in sorted(Path(index).glob("units/*/table.json")):
        head = json.loads(state.read_text())
        model = head.get("model")
        if not model or not Path(model).is_file():
            print(f"alexnet-kit: {state.parent}: its model {model} is gone; the units table was not updated",
                  file=sys.stderr)
            continue
        engine = load_engine(model, device=device)
        if engine.fingerprint != head["fingerprint"]:
            print(f"alexnet-kit: {state.parent}: {model} holds other weights now; the units table was not updated",
                  file=sys.stderr)
            continue
        UnitTable(state.parent, engine, head["layer"], model).update(store, progress)
        done.append(head["layer"])
    return done
