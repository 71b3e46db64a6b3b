"""The index folder on disk, and whether its files agree.

An index is a folder holding

* ``photos.sqlite``: the metadata store (the truth: paths, checksums,
  the model fingerprint and feature settings, where each vector is),
* ``vectors/``: the full vectors, float16 shard files (:mod:`.shards`;
  older folders keep float32 vectors inside ``photos.sqlite``),
* ``vectors.faiss``: the FAISS index built from the store's vectors, and,
  for an index whose inverted lists did not fit ``--max-memory``,
  ``vectors.<token>.ivfdata``: those lists, memory-mapped (:mod:`.capped`).

The FAISS file is replaced atomically (write beside, fsync, rename) and its
SHA-256 and the store version it was built from are recorded in the store.
Before the rename the coming digest is recorded as ``index_next``, so a
crash between the rename and the bookkeeping is told apart from damage.
A lists file is never changed once recorded: an update writes a copy under
a new name, which the new FAISS file refers to; the old one is deleted
after the new record is committed.
"""
from __future__ import annotations

import os
import secrets
import shutil
from enum import Enum
from pathlib import Path

from ..fsutil import atomic_path
from .errors import IndexProblem
from .factory import faiss, to_cpu
from .store import Store, file_checksum

STORE_NAME = "photos.sqlite"
FAISS_NAME = "vectors.faiss"


class State(Enum):
    OK = "ok"
    BUILDING = "building"  # a build that has not finished: resume with `index build`
    STALE = "stale"  # the store changed after the FAISS file was written: finish with `index add`


def store_path(root: str | os.PathLike) -> Path:
    return Path(root) / STORE_NAME


def faiss_path(root: str | os.PathLike) -> Path:
    return Path(root) / FAISS_NAME


def state(root: Path, store: Store, verify: bool = True) -> State:
    """Whether the FAISS file matches the store; raises :class:`IndexProblem` if it is damaged."""
    if store.get("state") != "complete":
        return State.BUILDING
    path = faiss_path(root)
    if not path.is_file():
        raise IndexProblem(path, "FAISS index file missing (rebuild it from the store with 'alexnet-kit index add INDEX --rebuild')")
    content = store.get("content_version")
    record = _matching(path, store, verify)
    _check_lists(root, record, verify)
    return State.OK if record.get("version") == content else State.STALE


def _matching(path: Path, store: Store, verify: bool) -> dict:
    """The record (``index``, or ``index_next`` after a crash before the bookkeeping) the FAISS file is."""
    current = store.get("index") or {}
    pending = store.get("index_next") or {}
    rebuild = "(rebuild it from the store with 'alexnet-kit index add INDEX --rebuild')"
    if verify:
        digest = file_checksum(path)
        for record in (current, pending):
            if digest == record.get("sha256"):
                return record
        raise IndexProblem(path, f"checksum mismatch: the FAISS index is corrupt or was modified {rebuild}")
    size = path.stat().st_size
    for record in (current, pending):
        if size == record.get("bytes"):
            return record
    raise IndexProblem(path, f"size mismatch: the FAISS index is truncated or was modified {rebuild}")


def _check_lists(root: Path, record: dict, verify: bool) -> None:
    """The on-disk inverted lists of ``record``, if any: present, and of the recorded size (and digest)."""
    name = record.get("lists")
    if not name:
        return
    path = Path(root) / name
    rebuild = "(rebuild it from the store with 'alexnet-kit index add INDEX --rebuild')"
    if not path.is_file():
        raise IndexProblem(path, f"the FAISS index's on-disk lists are missing {rebuild}")
    if path.stat().st_size != record.get("lists_bytes"):
        raise IndexProblem(path, f"size mismatch: the FAISS index's on-disk lists are truncated or were modified {rebuild}")
    if verify and file_checksum(path) != record.get("lists_sha256"):
        raise IndexProblem(path, f"checksum mismatch: the FAISS index's on-disk lists are corrupt or were modified {rebuild}")


def read_index(root: Path, store: Store | None = None, writable: bool = False):
    """The FAISS index of ``root``. With on-disk lists (the ``store`` says so) they are memory-mapped
    read-only; ``writable``: from a fresh copy of the lists file instead, for an update."""
    path = faiss_path(root)
    records = [store.get("index") or {}, store.get("index_next") or {}] if store is not None else []
    fs = faiss()
    try:
        if any(r.get("lists") for r in records):
            try:
                index = fs.read_index(str(path), fs.IO_FLAG_SKIP_IVF_DATA)
            except RuntimeError:  # lists in the file itself (an older record in the store)
                index = fs.read_index(str(path))
            lists = _on_disk_lists(index)
            if lists is not None:
                _map_lists(root, lists, writable)
            return index
        return fs.read_index(str(path))
    except RuntimeError as e:
        raise IndexProblem(path, f"corrupt FAISS index ({str(e).strip().splitlines()[-1][:160]})") from None


def _on_disk_lists(index):
    fs = faiss()
    try:
        lists = fs.downcast_InvertedLists(fs.extract_index_ivf(index).invlists)
    except RuntimeError:
        return None
    return lists if isinstance(lists, fs.OnDiskInvertedLists) else None


def _map_lists(root: Path, lists, writable: bool) -> None:
    """Point the lists at their file in ``root`` (wherever the folder was built) and map it."""
    name = Path(lists.filename).name
    if writable:
        copy = f"vectors.{secrets.token_hex(4)}.ivfdata"
        shutil.copyfile(Path(root) / name, Path(root) / copy)
        name = copy
    path = Path(root) / name
    if not path.is_file():
        raise IndexProblem(path, "the FAISS index's on-disk lists are missing "
                                 "(rebuild it from the store with 'alexnet-kit index add INDEX --rebuild')")
    lists.filename = str(path)
    lists.read_only = not writable
    lists.do_mmap()


def lists_name(index) -> str | None:
    """The name of the index's on-disk lists file, None when its lists are in memory."""
    lists = _on_disk_lists(index)
    return Path(lists.filename).name if lists is not None else None


def write_index(root: Path, store: Store, index, info: dict) -> dict:
    """Replace the FAISS file atomically and record it (``info``: spec, params, counts)."""
    path = faiss_path(root)
    version = store.get("content_version")
    name = lists_name(index)
    if name:
        info = {**info, **_seal_lists(Path(root) / name)}
    with atomic_path(path) as tmp:
        faiss().write_index(index if name else to_cpu(index), str(tmp))
        record = {**info, "sha256": file_checksum(tmp), "bytes": tmp.stat().st_size, "version": version}
        store.put(index_next=record)
    store.put(index=record, state="complete")
    for old in Path(root).glob("vectors.*.ivfdata"):  # lists of earlier builds, or of an unfinished one
        if old.name != name:
            old.unlink()
    return record


def _seal_lists(path: Path) -> dict:
    """fsync an on-disk lists file (written through its mapping) and describe it for the record."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return {"lists": path.name, "lists_bytes": path.stat().st_size, "lists_sha256": file_checksum(path)}
