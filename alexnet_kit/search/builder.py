"""Build, update and shrink an index: photos in, store rows and a FAISS file out.

One routine serves ``index build`` (first time, or resuming an interrupted
build) and ``index add``: walk the photos, skip the unchanged ones (same
size and mtime; or same SHA-256 when only the mtime moved), run the network
on the rest in batches, commit every ``chunk`` photos to the store in one
transaction, and finally bring the FAISS file up to date: incrementally
when it matched the store before (drop changed ids, add new vectors),
otherwise rebuilt from the store's vectors (an interrupted run, a first
build, or a collection that outgrew its index type).
"""
from __future__ import annotations

import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np

from tqdm import tqdm

from ..engines import choose
from ..engines.messages import stderr_log
from ..engines.precision import Precision
from ..errors import AlexKitError
from ..features import FeatureExtractor, default_batch_photos
from ..images import find_images
from ..interrupt import StopOnSignal
from . import capped, files, rewrite
from . import rerank as reranking
from .errors import IndexProblem
from .factory import as_float32, default_search_params, index_bytes, make_index, resolve_spec, supports_remove
from .index_settings import IndexSettings
from .store import Record, Store, file_checksum

CHUNK = 256  # photos per committed transaction: at most this much work is lost on a crash


@dataclass
class UpdateReport:
    scanned: int = 0
    unchanged: int = 0  # same size and mtime (or same checksum): not read again
    new: int = 0
    changed: int = 0
    extracted: int = 0  # photos that went through the network in this run
    bad: int = 0  # unreadable in this run (skipped, recorded)
    bad_known: int = 0  # unreadable before and unchanged since
    removed: int = 0
    indexed: int = 0  # vectors in the FAISS index afterwards
    spec: str = ""
    rebuilt: bool = False
    resumed: bool = False
    migrated: bool = False  # vectors moved from SQLite to shard files (index add --rebuild)
    reclaimed: int = 0  # dead shard rows dropped by a rewrite
    dropped: int = 0  # photos of damaged shards, dropped to be extracted again
    seconds: float = 0.0
    errors: list[tuple[str, str]] = field(default_factory=list)

    def summary(self) -> str:
        parts = [f"{self.indexed} photos indexed ({self.spec})", f"{self.extracted} extracted"]
        if self.unchanged:
            parts.append(f"{self.unchanged} unchanged skipped")
        if self.bad or self.bad_known:
            parts.append(f"{self.bad + self.bad_known} unreadable skipped")
        if self.removed:
            parts.append(f"{self.removed} removed")
        if self.migrated:
            parts.append("vectors moved to float16 shards")
        if self.reclaimed:
            parts.append(f"{self.reclaimed} dead vector rows reclaimed")
        if self.dropped:
            parts.append(f"{self.dropped} photos of damaged shards dropped (extracted again where found)")
        return ", ".join(parts) + f" in {self.seconds:.1f} s"


def walk_photos(paths: Iterable[str | os.PathLike]) -> list[str]:
    """Image files under these folders (recursively) or given directly: absolute, sorted, unique."""
    expanded = []
    for p in paths:
        path = Path(p).expanduser()
        if not path.exists():
            raise AlexKitError(f"{p}: no such file or folder")
        expanded.append(path)
    return sorted({str(Path(f).resolve()) for f in find_images(expanded)})


def index_extractor(model: str | os.PathLike, precision: Precision | None, *, device: str = "cpu", crops: int = 1,
                    metric: str = "cosine", batch_photos: int | None = None, workers: int | None = None) -> FeatureExtractor:
    """The extractor that computes an index's vectors from ``model`` in ``precision`` (None: a new index,
    the stored verdict for this model and CPU, else fp32), measuring nothing that a precision named
    other than fp32 does not need (see :func:`~alexnet_kit.engines.choose`)."""
    batch = crops * (batch_photos or default_batch_photos(crops))
    selection = choose(model, None, precision, device=device, batch=batch, log=stderr_log, measure=False)
    return FeatureExtractor(selection, crops=crops, metric=metric, batch_photos=batch_photos, workers=workers)


def plan(store: Store, photos: list[str], report: UpdateReport) -> list[tuple[str, int, int]]:
    """Which photos need the network: (path, size, mtime_ns) of the new and changed ones."""
    rows = store.rows()
    todo: list[tuple[str, int, int]] = []
    touched: list[tuple[str, int, int]] = []
    for path in photos:
        report.scanned += 1
        try:
            st = os.stat(path)
        except OSError as e:
            report.bad += 1
            report.errors.append((path, f"cannot read ({e.strerror})"))
            continue
        row = rows.get(path)
        if row is None:
            report.new += 1
            todo.append((path, st.st_size, st.st_mtime_ns))
            continue
        if row.size == st.st_size and row.mtime_ns == st.st_mtime_ns:
            report.unchanged += 1
            report.bad_known += not row.ok
            continue
        try:
            same = row.size == st.st_size and file_checksum(path) == row.checksum
        except OSError:
            same = False
        if same:  # touched but not changed (a copy that kept the bytes, a `touch`)
            report.unchanged += 1
            report.bad_known += not row.ok
            touched.append((path, st.st_size, st.st_mtime_ns))
        else:
            report.changed += 1
            todo.append((path, st.st_size, st.st_mtime_ns))
    store.touch(touched)
    return todo


def extract_into(store: Store, extractor: FeatureExtractor, todo: list[tuple[str, int, int]], report: UpdateReport,
                 chunk: int = CHUNK, progress: bool = False) -> tuple[list[int], list[int]]:
    """Run the network over ``todo`` and commit every ``chunk`` results; (removed ids, added ids)."""
    removed: list[int] = []
    added: list[int] = []
    pending: list[Record] = []
    stats = {p: (s, m) for p, s, m in todo}

    def flush():
        r, a = store.commit(pending, extractor.dim)
        removed.extend(r)
        added.extend(a)
        pending.clear()

    bar = tqdm(total=len(todo), unit="photo", desc="fc7 features", disable=not progress, dynamic_ncols=True, file=sys.stderr)
    # SIGTERM/SIGINT: the batch in hand is the last; what is extracted is committed, then Interrupted
    with bar, StopOnSignal("committing the photos done so far") as stop:
        try:
            for item in extractor.extract(p for p, _, _ in todo):
                path = item.name
                size, mtime = stats[path]
                try:
                    checksum = file_checksum(path)
                except OSError as e:
                    checksum, item.error, item.vector = "", item.error or f"{path}: cannot read ({e.strerror})", None
                if item.error is not None:
                    report.bad += 1
                    report.errors.append((path, item.error))
                else:
                    report.extracted += 1
                pending.append(Record(path, size, mtime, checksum, item.vector, item.error))
                bar.update(1)
                if item.error is not None:
                    bar.set_postfix(unreadable=report.bad, refresh=False)
                at_batch_end = extractor.batch_done(report.extracted + report.bad)  # a signal ends the batch first
                if len(pending) >= chunk or (stop.requested and at_batch_end):
                    flush()
                if stop.requested and at_batch_end:
                    break
            if pending:
                flush()
        except KeyboardInterrupt:  # Ctrl-C where no handler could be installed (not the main thread): committed chunks stay
            bar.close()
            print(f"alexnet-kit: interrupted; {_safe(store)} photos are safely in {store.path.parent}: "
                  "run the same command again to resume", file=sys.stderr)
            raise
        stop.raise_if_requested(f"stopped; {_safe(store)} photos are safely in {store.path.parent}: "
                                "run the same command again to resume")
    return removed, added


def _safe(store: Store) -> int:
    """Photos the store holds, readable and not."""
    return sum(store.count())


def rebuild(root: Path, store: Store, report: UpdateReport, progress: bool = False, max_memory: int | None = None):
    """A fresh FAISS index from every vector in the store (trained on a sample when compressed), streamed
    within ``max_memory`` bytes (default a quarter of RAM; past it an IVF index keeps its lists on disk)."""
    dim = int(store.get("dim"))
    n = store.count()[0]
    spec = resolve_spec(store.get("index_type", "auto"), n, dim, rerank=_reranks(store))
    index, _ = capped.build(root, store, spec, dim, max_memory or capped.default_max_memory(), progress)
    report.rebuilt = True
    return index, spec


def finish(root: Path, store: Store, report: UpdateReport, removed: list[int], added: list[int],
           was_ok: bool, progress: bool = False, force_rebuild: bool = False, max_memory: int | None = None) -> None:
    """Bring the FAISS file up to date with the store, then record it."""
    dim = int(store.get("dim"))
    n = store.count()[0]
    index = None
    spec = (store.get("index") or {}).get("spec", "")
    wanted = resolve_spec(store.get("index_type", "auto"), n, dim, rerank=_reranks(store))
    if was_ok and not force_rebuild and (removed or added) and spec == _family(wanted, spec):
        index = files.read_index(root, store, writable=True)  # on-disk lists: a copy, the live file untouched
        if removed and not supports_remove(index):
            index = None
        else:
            if removed:
                index.remove_ids(np.asarray(removed, np.int64))
            for start in range(0, len(added), 8192):
                ids, vecs = store.vectors(added[start : start + 8192], dim)
                if len(ids):
                    index.add_with_ids(as_float32(vecs), ids)
    elif was_ok and not force_rebuild and not (removed or added):
        record = store.get("index")
        if record["version"] != store.get("content_version"):  # only unreadable photos changed: no vector moved
            store.put(index={**record, "version": store.get("content_version")})
        report.indexed, report.spec = record["ntotal"], spec
        return
    if index is None:
        index, spec = rebuild(root, store, report, progress, max_memory)
    params = default_search_params(spec)
    record = files.write_index(root, store, index, {
        "spec": spec, "params": params, "ntotal": int(index.ntotal),
        "bytes_per_vector": _index_bytes(root, index) / max(1, index.ntotal)})
    report.indexed, report.spec = record["ntotal"], spec


def _reranks(store: Store) -> bool:
    """Whether the index's queries re-rank by default (then a compressed index needs fewer PCA dimensions)."""
    return reranking.resolve(None, store.get("rerank")) > 0


def _index_bytes(root: Path, index) -> int:
    """What the index takes, in memory or (on-disk lists) on disk."""
    name = files.lists_name(index)
    if name is None:
        return index_bytes(index)
    return (root / name).stat().st_size + index_bytes(index)


def _family(wanted: str, current: str) -> str:
    """Keep an existing index type while ``auto`` would still choose the same kind (Flat vs IVF)."""
    if ("IVF" in wanted) == ("IVF" in current) and ("HNSW" in wanted) == ("HNSW" in current):
        return current
    return wanted


def build(photos: Iterable[str | os.PathLike], out: str | os.PathLike, model: str | os.PathLike, *,
          crops: int = 1, metric: str = "cosine", index_type: str = "auto", device: str = "cpu",
          force: bool = False, chunk: int = CHUNK, progress: bool = False, batch_photos: int | None = None,
          workers: int | None = None, extractor: FeatureExtractor | None = None,
          walked: list[str] | None = None, precision: str | Precision | None = None,
          max_memory: int | None = None, rerank: int | None = None) -> UpdateReport:
    """Index the photos into the folder ``out``; resumes an interrupted build of the same photos.

    ``precision``: what to compute the vectors in (default: a resumed build's own; for a new index the
    stored verdict for this model and CPU, else fp32). ``walked``: :func:`walk_photos` of ``photos``,
    when the caller has it already. ``max_memory``: bytes the FAISS build may take (default a quarter
    of RAM). ``rerank``: the index's default number of candidates re-ranked per query (stored)."""
    t0 = time.perf_counter()
    root = Path(out)
    report = UpdateReport()
    photo_list = walked if walked is not None else walk_photos(photos)
    if root.exists() and not root.is_dir():
        raise IndexProblem(root, "exists and is not an index folder")
    # resuming a build: the precision it started in (a bf16 build goes on in bf16)
    before = None if force else IndexSettings.read(root)
    if precision is None and before is not None:
        precision = before.extraction_precision(root, device)
    extractor = extractor or index_extractor(model, precision and Precision(precision), device=device, crops=crops,
                                             metric=metric, batch_photos=batch_photos, workers=workers)
    if extractor.selection is not None:
        model = extractor.selection.path  # the file that runs (the int8 export when int8 was chosen)
    make_index(resolve_spec(index_type, 10**6, extractor.dim), extractor.dim)  # a bad type fails now, not after hours
    spath = files.store_path(root)
    if spath.exists() and force:
        spath.unlink()
        files.faiss_path(root).unlink(missing_ok=True)
        for old in [root / "shards", root / "vectors", root / "vectors-1"]:
            shutil.rmtree(old, ignore_errors=True)
        for old in root.glob("vectors.*.ivfdata"):
            old.unlink()
    if spath.exists():
        store = Store.open(spath)
        if store.get("state") == "complete":
            store.close()
            raise AlexKitError(f"{root}: an index is already there: update it with 'alexnet-kit index add {root}', "
                               "or rebuild it from scratch with --force")
        IndexSettings.from_store(store).check(extractor, model, root)
        report.resumed = True
    else:
        if root.exists() and any(root.iterdir()) and not spath.exists():
            raise IndexProblem(root, "folder is not empty and holds no index: choose a new folder for the index")
        store = Store.create(spath, {**IndexSettings.of(extractor, model).to_store(), "state": "building", "index_type": index_type,
                                     "roots": [str(Path(p).resolve()) for p in photos]})
    try:
        if rerank is not None:
            store.put(rerank=int(rerank))
        todo = plan(store, photo_list, report)
        extract_into(store, extractor, todo, report, chunk, progress)
        finish(root, store, report, [], [], was_ok=False, progress=progress, max_memory=max_memory)
        report.errors = report.errors or []
    finally:
        store.close()
    report.seconds = time.perf_counter() - t0
    return report


def add(root: str | os.PathLike, photos: Iterable[str | os.PathLike] | None = None, *, model: str | os.PathLike | None = None,
        device: str = "cpu", chunk: int = CHUNK, progress: bool = False, rebuild_index: bool = False,
        batch_photos: int | None = None, workers: int | None = None, max_memory: int | None = None) -> UpdateReport:
    """Take in new and changed photos (default: rescan the folders the index was built from).

    ``rebuild_index``: first rewrite the store where that changes anything (an old folder's vectors
    move to shards, dead rows go, damaged shards' photos are dropped and so extracted again), then
    rebuild the FAISS index from it, within ``max_memory`` bytes."""
    t0 = time.perf_counter()
    root = Path(root)
    report = UpdateReport()
    store = Store.open(files.store_path(root), verify=not rebuild_index)  # --rebuild repairs what verify refuses
    try:
        if rebuild_index:
            store = _rewrite_if_needed(store, report)
        # --rebuild is also the repair for a damaged FAISS file: do not insist on reading it
        was_ok = (not rebuild_index and store.get("state") == "complete"
                  and files.state(root, store) is files.State.OK)
        photos = list(photos) if photos else list(store.get("roots") or [])
        photo_list = walk_photos(photos) if photos else []
        settings = IndexSettings.from_store(store)
        model = model or settings.model_path
        if photo_list and not Path(model).exists():
            raise AlexKitError(f"{root}: its model {model} is gone: pass --model with the same model")
        removed: list[int] = []
        added: list[int] = []
        todo = plan(store, photo_list, report)
        if todo:
            extractor = index_extractor(model, settings.extraction_precision(root, device), device=device,
                                        crops=settings.features.crops, metric=settings.features.metric,
                                        batch_photos=batch_photos, workers=workers)
            settings.check(extractor, model, root)
            removed, added = extract_into(store, extractor, todo, report, chunk, progress)
        roots = set(store.get("roots") or [])
        new_roots = {str(Path(p).resolve()) for p in photos if Path(p).is_dir()}
        if not new_roots <= roots:
            store.put(roots=sorted(roots | new_roots))
        finish(root, store, report, removed, added, was_ok, progress, force_rebuild=rebuild_index, max_memory=max_memory)
    finally:
        store.close()
    report.seconds = time.perf_counter() - t0
    return report


def _rewrite_if_needed(store: Store, report: UpdateReport) -> Store:
    """The store rewritten (:mod:`.rewrite`) when it is of version 1, has dead rows or damaged shards."""
    bad = rewrite.damaged(store)
    dead = store.dead_rows()
    if store.layout != "sqlite" and not dead and not bad:
        return store
    report.migrated = store.layout == "sqlite"
    path = store.path
    store.close()
    store, report.dropped = rewrite.rewrite(path, bad)
    report.reclaimed = dead
    return store


def remove(root: str | os.PathLike, paths: Iterable[str | os.PathLike] = (), *, missing: bool = False,
           progress: bool = False) -> UpdateReport:
    """Forget photos (by path, or every photo under a folder); ``missing``: those whose file is gone."""
    t0 = time.perf_counter()
    root = Path(root)
    report = UpdateReport()
    store = Store.open(files.store_path(root))
    try:
        was_ok = files.state(root, store) is files.State.OK if store.get("state") == "complete" else False
        ids = store.ids_under([str(Path(p).expanduser().resolve()) for p in paths])
        if missing:
            ids = sorted(set(ids) | {r.id for r in store.rows().values() if not os.path.exists(r.path)})
        report.removed = store.delete(ids)
        finish(root, store, report, ids, [], was_ok, progress)
    finally:
        store.close()
    report.seconds = time.perf_counter() - t0
    return report
