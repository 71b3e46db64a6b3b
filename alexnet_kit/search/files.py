"""The index folder on disk, and whether its two files agree.

An index is a folder holding

* ``photos.sqlite``: the metadata store (the truth: paths, checksums,
  vectors, the model fingerprint and feature settings), and
* ``vectors.faiss``: the FAISS index built from the store's vectors.

The FAISS file is replaced atomically (write beside, fsync, rename) and its
SHA-256 and the store version it was built from are recorded in the store.
Before the rename the coming digest is recorded as ``index_next``, so a
crash between the rename and the bookkeeping is told apart from damage.
"""
from __future__ import annotations

import os
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
    current = store.get("index") or {}
    pending = store.get("index_next") or {}
    if verify:
        digest = file_checksum(path)
        if digest == current.get("sha256"):
            return State.OK if current.get("version") == content else State.STALE
        if digest == pending.get("sha256"):  # written and renamed, bookkeeping interrupted
            return State.OK if pending.get("version") == content else State.STALE
        raise IndexProblem(path, "checksum mismatch: the FAISS index is corrupt or was modified "
                                 "(rebuild it from the store with 'alexnet-kit index add INDEX --rebuild')")
    size = path.stat().st_size
    if size not in (current.get("bytes"), pending.get("bytes")):
        raise IndexProblem(path, "size mismatch: the FAISS index is truncated or was modified "
                                 "(rebuild it from the store with 'alexnet-kit index add INDEX --rebuild')")
    version = current.get("version") if size == current.get("bytes") else pending.get("version")
    return State.OK if version == content else State.STALE


def read_index(root: Path):
    path = faiss_path(root)
    try:
        return faiss().read_index(str(path))
    except RuntimeError as e:
        raise IndexProblem(path, f"corrupt FAISS index ({str(e).strip().splitlines()[-1][:160]})") from None


def write_index(root: Path, store: Store, index, info: dict) -> dict:
    """Replace the FAISS file atomically and record it (``info``: spec, params, counts)."""
    path = faiss_path(root)
    version = store.get("content_version")
    with atomic_path(path) as tmp:
        faiss().write_index(to_cpu(index), str(tmp))
        record = {**info, "sha256": file_checksum(tmp), "bytes": tmp.stat().st_size, "version": version}
        store.put(index_next=record)
    store.put(index=record, state="complete")
    return record
