"""Rewrite a store into fresh shards: migrate an old index folder, reclaim dead rows, drop damaged shards.

``index add INDEX --rebuild`` runs this before rebuilding the FAISS index when

* the store is of version 1 (float32 vectors inside SQLite): the vectors
  move to float16 shard files, and the new SQLite file holds no vectors
  (16 KiB a 4096-d photo becomes 8 KiB of shard plus the metadata);
* shard rows are dead (photos changed or removed since they were written);
* a shard is damaged (missing, truncated, changed): its photos are dropped
  from the store, so the rescan that follows extracts them again.

It never changes the live files in place: the new store is written as
``photos.sqlite.rewrite`` with its shards in a folder the live store does
not use (``vectors`` and ``vectors-1`` take turns), fsynced, and renamed
over ``photos.sqlite`` in one step; only then is the old shard folder
deleted. Killed at any point, the index is either the old one or the new
one, and leftovers of an unfinished rewrite are removed by the next.
Photo ids and ``content_version`` carry over (the version goes up by one,
so the FAISS file is rebuilt from the rewritten vectors).
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np

from .shards import _fsync_dir
from .store import Store

SUFFIX = ".rewrite"
META = "id, path, size, mtime_ns, checksum, error, updated"


def needed(store: Store) -> bool:
    """Whether a rewrite would change anything (checks every shard's checksum)."""
    return store.layout == "sqlite" or store.dead_rows() > 0 or bool(damaged(store))


def damaged(store: Store) -> dict[int, str]:
    """Damaged shards of ``store``: {shard: what is wrong}."""
    if store.shards is None:
        return {}
    return dict(store.shards.problems(store.shard_records(), full=True))


def rewrite(path: Path, bad: dict[int, str] | None = None, batch: int = 8192) -> tuple[Store, int]:
    """Rewrite the store at ``path`` (closed by the caller) as described above: (the new store, open;
    how many photos were dropped with a damaged shard). ``bad``: :func:`damaged`, when known."""
    old = Store.open(path, verify=False)
    try:
        bad = damaged(old) if bad is None else bad
        folder = "vectors-1" if old.shards is not None and old.shards.folder.name == "vectors" else "vectors"
        tmp = path.with_name(path.name + SUFFIX)
        _remove(tmp)
        shutil.rmtree(path.parent / folder, ignore_errors=True)  # leftovers of an unfinished rewrite
        settings = {k: v for k, v in old.settings().items() if k not in ("vectors", "format", "version", "created")}
        settings["content_version"] = int(settings.get("content_version", 0)) + 1
        new = Store.create(tmp, settings, vectors_dir=folder)
        try:
            dropped = _copy(old, new, set(bad), batch)
        finally:
            new.close()
        old_folder = old.shards.folder if old.shards is not None else None
    finally:
        old.close()
    _durable(tmp)
    os.replace(tmp, path)
    _fsync_dir(path.parent)
    if old_folder is not None:
        shutil.rmtree(old_folder, ignore_errors=True)
    return Store.open(path, verify=False), dropped


def _copy(old: Store, new: Store, bad_shards: set[int], batch: int) -> int:
    """Every photo of ``old`` into ``new`` with its id, the vectors in id order; photos of a damaged shard
    are left out. Returns how many were left out."""
    dim = int(old.get("dim"))
    drop = set()
    if bad_shards:
        marks = ",".join("?" * len(bad_shards))
        drop = {r[0] for r in old.conn.execute(f"SELECT id FROM photos WHERE shard IN ({marks})", sorted(bad_shards))}
    with new.transaction():
        rows = (r for r in old.conn.execute(f"SELECT {META} FROM photos ORDER BY id") if r[0] not in drop)
        new.conn.executemany(f"INSERT INTO photos({META}) VALUES(?,?,?,?,?,?,?)", rows)
        seq = old.conn.execute("SELECT seq FROM sqlite_sequence WHERE name='photos'").fetchone()
        if seq:  # ids are never reused, even those of photos removed before the rewrite
            new.conn.execute("INSERT OR REPLACE INTO sqlite_sequence(name, seq) VALUES('photos', ?)", (seq[0],))
    for ids, vecs in _live(old, dim, drop, batch):
        with new.transaction():
            places = new._append(list(vecs))
            new.conn.executemany("UPDATE photos SET shard=?, row=? WHERE id=?",
                                 [(s, r, int(i)) for (s, r), i in zip(places, ids)])
    return len(drop)


def _live(old: Store, dim: int, drop: set[int], batch: int):
    """(ids, vectors) of ``old`` in id order, without the dropped ids (whose shards cannot be read)."""
    if not drop:
        yield from old.iter_vectors(dim, batch)
        return
    q = f"SELECT id FROM photos WHERE {old._has} ORDER BY id"
    ids = np.array([r[0] for r in old.conn.execute(q) if r[0] not in drop], np.int64)
    for i in range(0, len(ids), batch):
        found, vecs = old.vectors(ids[i : i + batch], dim)
        order = np.argsort(found)
        yield found[order], vecs[order]


def _durable(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove(path: Path) -> None:
    for p in (path, path.with_name(path.name + "-journal")):
        try:
            p.unlink()
        except FileNotFoundError:
            pass
