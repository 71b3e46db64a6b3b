"""Features of many photos to one file: ``.npz``, or Parquet where pyarrow is installed.

The photos stream through :meth:`FeatureExtractor.extract
<alexnet_kit.features.FeatureExtractor.extract>`, the same path the index
builder takes, so a vector in the file equals the one an index would hold.
Every ``chunk`` photos are written to ``OUT.partial/`` (one file per chunk,
each written atomically), so an interrupted run loses at most one chunk and
the same command resumes it: photos already done are skipped. The finished
file is assembled from the chunks and moved into place atomically; the
partial folder then goes.

The file holds ``paths`` (absolute), ``vectors`` (float32, one row per
readable photo, same order), the model's ``fingerprint`` and the feature
settings and the precision it ran in (fp32, bf16 or int8); the unreadable
photos are listed with their errors. A resumed run must use the same
precision as the interrupted one.

A row holds the blocks of the layers asked for, side by side in the order
named; the metadata's ``layers`` lists each as ``{"name", "shape" (of the
layer for one image: [C, H, W] or [D]), "spatial" (flatten, max or mean;
null for a vector), "start", "end"}`` (its columns). :func:`split_layers`
cuts the rows back into layers::

    paths, vectors, meta = read_features("f.npz")     # --layer conv5,fc7
    split_layers(vectors, meta)["conv5"].shape          # (N, 256, 13, 13) flattened, (N, 256) max or mean
"""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm import tqdm

from .engines.precision import Precision
from .errors import AlexKitError
from .features import FeatureExtractor
from .fsutil import atomic_path
from .interrupt import StopOnSignal

FORMATS = (".npz", ".parquet")
CHUNK = 256


@dataclass
class FeaturesFileReport:
    out: Path
    written: int = 0  # vectors in the file
    extracted: int = 0  # photos through the network in this run
    resumed: int = 0  # photos taken from an interrupted run's chunks
    errors: list[tuple[str, str]] = field(default_factory=list)
    dim: int = 0


def partial_dir(out: Path) -> Path:
    return out.with_name(out.name + ".partial")


def _header(extractor: FeatureExtractor) -> dict:
    # what makes two runs' vectors comparable; the photo list may grow between them
    # (bf16 keeps the fp32 fingerprint, yet its vectors differ in the third decimal: precision too)
    return {"fingerprint": extractor.fingerprint, "settings": json.loads(extractor.settings.to_json()), "dim": extractor.dim,
            "precision": str(extractor.precision)}


def _write_chunk(folder: Path, n: int, paths: list[str], vectors: list[np.ndarray], bad: list[tuple[str, str]], dim: int) -> None:
    with atomic_path(folder / f"chunk-{n:06d}.npz") as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, paths=np.asarray(paths, dtype=str), vectors=np.asarray(vectors, np.float32).reshape(-1, dim),
                     bad_paths=np.asarray([p for p, _ in bad], dtype=str), bad_errors=np.asarray([e for _, e in bad], dtype=str))


def _read_chunks(folder: Path, dim: int, with_vectors: bool = True):
    """(paths, vectors, bad) of the chunks written so far; ``with_vectors=False`` leaves the
    vectors unread (an .npz member is read only when asked for) and returns an empty array."""
    paths: list[str] = []
    vectors: list[np.ndarray] = []
    bad: list[tuple[str, str]] = []
    for f in sorted(folder.glob("chunk-*.npz")):
        with np.load(f) as z:
            paths += z["paths"].tolist()
            if with_vectors:
                vectors.append(z["vectors"].reshape(-1, dim))
            bad += list(zip(z["bad_paths"].tolist(), z["bad_errors"].tolist()))
    return paths, (np.concatenate(vectors) if vectors else np.empty((0, dim), np.float32)), bad


def check_output(out: Path, force: bool = False) -> None:
    """A one-line error for an output the export cannot write."""
    if out.suffix.lower() not in FORMATS:
        raise AlexKitError(f"{out}: the output must end in .npz or .parquet")
    if out.suffix.lower() == ".parquet":
        if importlib.util.find_spec("pyarrow") is None:
            raise AlexKitError(f"{out}: Parquet needs pyarrow (pip install pyarrow); or write .npz")
    if out.exists() and not force:
        raise AlexKitError(f"{out}: already exists (pass --force to replace it)")
    if out.is_dir():
        raise AlexKitError(f"{out}: is a folder")


def _open_partial(folder: Path, header: dict) -> None:
    """Start ``folder`` for a new run, or check that the interrupted run in it computed the same vectors."""
    state = folder / "state.json"
    if not folder.exists():
        folder.mkdir(parents=True)
        with atomic_path(state) as tmp:
            tmp.write_text(json.dumps(header))
        return
    try:
        theirs = json.loads(state.read_text())
    except (OSError, ValueError):
        theirs = None
    if isinstance(theirs, dict) and "precision" in theirs:
        theirs = {**theirs, "precision": str(_recorded(theirs["precision"]))}  # an int8 mode reads as int8
    if (isinstance(theirs, dict) and theirs.get("precision", header["precision"]) != header["precision"]
            and {**theirs, "precision": header["precision"]} == header):
        raise AlexKitError(f"{folder}: the interrupted run computed its features in {theirs['precision']}, this one "
                           f"in {header['precision']}: run it again with --precision {theirs['precision']}, "
                           "or delete the folder to start over")
    if theirs != header:
        raise AlexKitError(f"{folder}: an interrupted run with another model or feature settings: "
                           "delete the folder to start over, or run that command again")


def _recorded(text) -> Precision | str:
    try:
        return Precision.parse(text)
    except ValueError:
        return text  # not ours: the comparison then refuses it


class _Chunks:
    """The photos of this run, gathered and written ``chunk`` at a time to the partial folder."""

    def __init__(self, folder: Path, dim: int, chunk: int, report: FeaturesFileReport):
        self.folder, self.dim, self.chunk, self.report = folder, dim, chunk, report
        self.n = len(list(folder.glob("chunk-*.npz")))
        self.paths: list[str] = []
        self.vectors: list[np.ndarray] = []
        self.bad: list[tuple[str, str]] = []

    def add(self, item) -> None:
        if item.error is None:
            self.paths.append(item.name)
            self.vectors.append(item.vector)
            self.report.extracted += 1
        else:
            self.bad.append((item.name, item.error))
        if len(self.paths) + len(self.bad) >= self.chunk:
            self.flush()

    def flush(self) -> None:
        if self.paths or self.bad:
            _write_chunk(self.folder, self.n, self.paths, self.vectors, self.bad, self.dim)
            self.report.errors += self.bad
            self.n, self.paths, self.vectors, self.bad = self.n + 1, [], [], []


def _extract(todo: list[str], extractor: FeatureExtractor, chunks: _Chunks, known_bad: int, total: int,
             progress: bool) -> None:
    """Run the network over ``todo`` into ``chunks``; a signal stops it after the batch in hand."""
    report, folder = chunks.report, chunks.folder
    bar = tqdm(total=total, initial=total - len(todo), unit="photo", desc=f"{extractor.settings.layer} features",
               disable=not progress, dynamic_ncols=True, file=sys.stderr)
    # SIGTERM/SIGINT: the batch in hand is the last; the chunk so far is written, then Interrupted
    with bar, StopOnSignal("writing the photos done so far") as stop:
        try:
            for item in extractor.extract(todo):
                chunks.add(item)
                if item.error is not None:
                    bar.set_postfix(unreadable=known_bad + len(chunks.bad) + len(report.errors), refresh=False)
                bar.update(1)
                # a signal ends the batch in hand first
                if stop.requested and extractor.batch_done(report.extracted + len(report.errors) + len(chunks.bad)):
                    break
            chunks.flush()
        except KeyboardInterrupt:  # Ctrl-C where no handler could be installed (not the main thread): written chunks stay
            bar.close()
            print(f"alexnet-kit: interrupted; the photos done so far are in {folder}: run the same command again to resume",
                  file=sys.stderr)
            raise
        done = total - len(todo) + report.extracted + len(report.errors)
        stop.raise_if_requested(f"stopped; {done} of {total} photos are done, in {folder}: "
                                "run the same command again to resume")


def _assemble(photos: Sequence[str], out: Path, folder: Path, extractor: FeatureExtractor, model: str):
    """Write ``out`` from the chunks, in the order of ``photos``; (paths written, unreadable)."""
    all_paths, all_vectors, all_bad = _read_chunks(folder, extractor.dim)
    order = {p: i for i, p in enumerate(photos)}
    keep = sorted((order[p], i) for i, p in enumerate(all_paths) if p in order)  # photos gone from the list drop out
    all_paths = [all_paths[i] for _, i in keep]
    all_vectors = all_vectors[[i for _, i in keep]].reshape(-1, extractor.dim)
    all_bad = sorted((b for b in all_bad if b[0] in order), key=lambda b: order[b[0]])
    meta = {"fingerprint": extractor.fingerprint, "model": model, "layer": extractor.settings.layer,
            "crops": extractor.settings.crops, "metric": extractor.settings.metric,
            "features": extractor.settings.describe(), "dim": extractor.dim, "engine": extractor.engine.description,
            "precision": str(extractor.precision), "unreadable": [{"path": p, "error": e} for p, e in all_bad],
            "layers": layers_meta(extractor)}
    with atomic_path(out) as tmp:
        if out.suffix.lower() == ".npz":
            with open(tmp, "wb") as f:
                np.savez(f, paths=np.asarray(all_paths, dtype=str), vectors=all_vectors,
                         fingerprint=np.asarray(extractor.fingerprint), meta=np.asarray(json.dumps(meta)),
                         unreadable_paths=np.asarray([p for p, _ in all_bad], dtype=str),
                         unreadable_errors=np.asarray([e for _, e in all_bad], dtype=str))
        else:
            _write_parquet(tmp, all_paths, all_vectors, meta)
    return all_paths, all_bad


def layers_meta(extractor: FeatureExtractor) -> list[dict]:
    """Where each layer's columns lie in a row, as the file's metadata records it."""
    spatial = extractor.settings.spatial
    return [{"name": name, "shape": list(shape), "spatial": spatial if len(shape) == 3 else None, "start": start,
             "end": end} for name, (start, end, shape) in extractor.layer_columns.items()]


def split_layers(vectors: np.ndarray, meta: dict) -> dict[str, np.ndarray]:
    """The rows of a features file cut into its layers, by name in the order asked: (N, C, H, W) for a map
    kept whole (``flatten``), (N, C) for one reduced by ``max`` or ``mean``, (N, D) for a vector.
    A file from before ``layers`` was recorded holds one layer: its rows as they are."""
    if "layers" not in meta:
        return {meta["layer"]: vectors}
    out = {}
    for entry in meta["layers"]:
        block = vectors[:, entry["start"]:entry["end"]]
        shape = tuple(entry["shape"])
        out[entry["name"]] = block.reshape(len(vectors), *shape) if entry["spatial"] == "flatten" else block
    return out


def export_features(photos: Sequence[str], out: str | os.PathLike, extractor: FeatureExtractor, *, model: str = "",
                    chunk: int = CHUNK, progress: bool = False, force: bool = False) -> FeaturesFileReport:
    """Write the features of ``photos`` (absolute paths, in order) to ``out``; resumes an interrupted run."""
    out = Path(out)
    check_output(out, force)
    folder = partial_dir(out)
    _open_partial(folder, _header(extractor))
    report = FeaturesFileReport(out, dim=extractor.dim)
    done_paths, _, done_bad = _read_chunks(folder, extractor.dim, with_vectors=False)  # which photos are done
    done = (set(done_paths) | {p for p, _ in done_bad}) & set(photos)
    report.resumed = len(done)
    todo = [p for p in photos if p not in done]
    _extract(todo, extractor, _Chunks(folder, extractor.dim, chunk, report), len(done_bad), len(photos), progress)
    all_paths, all_bad = _assemble(photos, out, folder, extractor, model)
    shutil.rmtree(folder, ignore_errors=True)
    report.written = len(all_paths)
    report.errors = all_bad
    return report


def _write_parquet(path: Path, paths: list[str], vectors: np.ndarray, meta: dict) -> None:
    import pyarrow as pa  # defers pyarrow, an optional dependency
    import pyarrow.parquet as pq  # defers pyarrow

    dim = vectors.shape[1]
    column = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1), pa.float32()), dim)
    table = pa.table({"path": pa.array(paths, pa.string()), "vector": column})
    table = table.replace_schema_metadata({"alexnet_kit": json.dumps(meta)})
    pq.write_table(table, str(path))


def read_features(path: str | os.PathLike) -> tuple[list[str], np.ndarray, dict]:
    """(paths, vectors, metadata) of a file written by :func:`export_features`."""
    path = Path(path)
    if path.suffix.lower() == ".parquet":
        import pyarrow.parquet as pq  # defers pyarrow, an optional dependency

        table = pq.read_table(str(path))
        meta = json.loads(table.schema.metadata[b"alexnet_kit"])
        vectors = np.asarray(table.column("vector").combine_chunks().flatten(), np.float32).reshape(len(table), meta["dim"])
        return table.column("path").to_pylist(), vectors, meta
    with np.load(path) as z:
        meta = json.loads(str(z["meta"]))
        return z["paths"].tolist(), z["vectors"], meta
