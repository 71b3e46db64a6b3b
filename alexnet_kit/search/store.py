"""The index's metadata store: one SQLite file, the source of truth.

Every photo the index has seen is one row: its path, size, modification
time and SHA-256 (to tell new and changed files from unchanged ones), and
either its feature vector (float32, kept so the FAISS index can be rebuilt,
retrained or re-typed without running the network again) or the reason it
could not be read (so an unchanged bad file is not retried every time).
A ``settings`` table records what every vector means: the model's
fingerprint and the feature settings; the index refuses anything else.

Rows are written in chunks, each one transaction, so an interrupted build
keeps everything committed before the interruption and resumes from there.
``content_version`` counts those commits; the FAISS file records the
version it was built from, which is how a stale index is recognised.
"""
from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from .errors import IndexProblem

FORMAT = "alexnet-kit-index"
VERSION = 1

SCHEMA = """
CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS photos (
    id INTEGER PRIMARY KEY AUTOINCREMENT,  -- the FAISS id; never reused
    path TEXT NOT NULL UNIQUE,             -- absolute
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    checksum TEXT NOT NULL,                -- sha256 of the file's bytes
    vector BLOB,                           -- float32 little-endian, NULL when unreadable
    error TEXT,                            -- why it could not be read, NULL when fine
    updated REAL NOT NULL
);
"""


@dataclass
class Row:
    id: int
    path: str
    size: int
    mtime_ns: int
    checksum: str
    ok: bool


@dataclass
class Record:
    """One extraction result, ready to commit."""

    path: str
    size: int
    mtime_ns: int
    checksum: str
    vector: np.ndarray | None
    error: str | None = None


def file_checksum(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class Store:
    def __init__(self, path: Path, conn: sqlite3.Connection):
        self.path = path
        self.conn = conn

    # -- opening ---------------------------------------------------------

    @classmethod
    def create(cls, path: str | os.PathLike, settings: dict[str, object]) -> "Store":
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        conn.executescript(SCHEMA)
        store = cls(path, conn)
        with store.transaction():
            store._put({"format": FORMAT, "version": VERSION, "content_version": 0, "created": time.time(), **settings})
        return store

    @classmethod
    def open(cls, path: str | os.PathLike, verify: bool = True) -> "Store":
        """Open an existing store; a damaged or foreign file raises :class:`IndexProblem`."""
        path = Path(path)
        if not path.is_file():
            raise IndexProblem(path, "metadata store not found (not an alexnet-kit index, or an incomplete one)")
        try:
            # callers serialise access themselves (the demo queries from worker threads)
            conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            if verify:
                problems = [r[0] for r in conn.execute("PRAGMA quick_check")]
                if problems != ["ok"]:
                    raise IndexProblem(path, f"corrupt metadata store (sqlite: {problems[0]})")
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        except sqlite3.DatabaseError as e:
            raise IndexProblem(path, f"corrupt metadata store, or not one (sqlite: {e})") from None
        if not {"settings", "photos"} <= tables:
            raise IndexProblem(path, "not an alexnet-kit index store (tables missing)")
        store = cls(path, conn)
        try:
            fmt, version = store.get("format"), store.get("version")
        except sqlite3.DatabaseError as e:
            raise IndexProblem(path, f"corrupt metadata store (sqlite: {e})") from None
        if fmt != FORMAT:
            raise IndexProblem(path, "not an alexnet-kit index store")
        if not isinstance(version, int) or version > VERSION:
            raise IndexProblem(path, f"written by a newer alexnet-kit (store version {version}); upgrade alexnet-kit")
        return store

    def close(self) -> None:
        self.conn.close()

    def transaction(self):
        return _Transaction(self.conn)

    # -- settings --------------------------------------------------------

    def get(self, key: str, default=None):
        row = self.conn.execute("SELECT value FROM settings WHERE key=?", (key,)).fetchone()
        return json.loads(row[0]) if row else default

    def _put(self, values: dict[str, object]) -> None:
        self.conn.executemany(
            "INSERT INTO settings(key, value) VALUES(?, ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
            [(k, json.dumps(v)) for k, v in values.items()],
        )

    def put(self, **values) -> None:
        with self.transaction():
            self._put(values)

    def settings(self) -> dict[str, object]:
        return {k: json.loads(v) for k, v in self.conn.execute("SELECT key, value FROM settings")}

    # -- photos ----------------------------------------------------------

    def rows(self) -> dict[str, Row]:
        """Every photo by path (without vectors)."""
        cur = self.conn.execute("SELECT id, path, size, mtime_ns, checksum, error IS NULL FROM photos")
        return {r[1]: Row(r[0], r[1], r[2], r[3], r[4], bool(r[5])) for r in cur}

    def row(self, path: str) -> Row | None:
        r = self.conn.execute("SELECT id, path, size, mtime_ns, checksum, error IS NULL FROM photos WHERE path=?", (path,)).fetchone()
        return Row(r[0], r[1], r[2], r[3], r[4], bool(r[5])) if r else None

    def commit(self, records: Iterable[Record], dim: int) -> tuple[list[int], list[int]]:
        """Insert or replace rows by path, in one transaction; bumps ``content_version``.

        A changed photo gets a new id (the FAISS index may still hold the old
        one). Returns (ids no longer valid, new ids that hold a vector), for
        an incremental update of the FAISS index.
        """
        removed: list[int] = []
        added: list[int] = []
        now = time.time()
        with self.transaction():
            for r in records:
                blob = None
                if r.vector is not None:
                    v = np.ascontiguousarray(r.vector, dtype="<f4")
                    if v.shape != (dim,):
                        raise ValueError(f"vector of shape {v.shape} for a {dim}-d index")
                    blob = v.tobytes()
                old = self.conn.execute("SELECT id FROM photos WHERE path=?", (r.path,)).fetchone()
                if old:
                    self.conn.execute("DELETE FROM photos WHERE id=?", (old[0],))
                    removed.append(old[0])
                cur = self.conn.execute(
                    "INSERT INTO photos(path, size, mtime_ns, checksum, vector, error, updated) VALUES(?,?,?,?,?,?,?)",
                    (r.path, r.size, r.mtime_ns, r.checksum, blob, r.error, now),
                )
                if blob is not None:
                    added.append(int(cur.lastrowid))
            self._bump()
        return removed, added

    def touch(self, updates: list[tuple[str, int, int]]) -> None:
        """Record a new (size, mtime) for photos whose bytes did not change."""
        if updates:
            with self.transaction():
                self.conn.executemany("UPDATE photos SET size=?, mtime_ns=? WHERE path=?", [(s, m, p) for p, s, m in updates])

    def delete(self, ids: list[int]) -> int:
        if not ids:
            return 0
        with self.transaction():
            self.conn.executemany("DELETE FROM photos WHERE id=?", [(i,) for i in ids])
            self._bump()
        return len(ids)

    def _bump(self) -> None:
        self.conn.execute(
            "UPDATE settings SET value = CAST(CAST(value AS INTEGER) + 1 AS TEXT) WHERE key='content_version'"
        )

    def count(self) -> tuple[int, int]:
        """(photos with a vector, unreadable photos)."""
        ok, bad = self.conn.execute("SELECT COUNT(*) - COUNT(error), COUNT(error) FROM photos").fetchone()
        return int(ok), int(bad)

    def errors(self, limit: int = 20) -> list[tuple[str, str]]:
        return list(self.conn.execute("SELECT path, error FROM photos WHERE error IS NOT NULL ORDER BY path LIMIT ?", (limit,)))

    def iter_vectors(self, dim: int, batch: int = 8192) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(ids int64, vectors float32 (k, dim)) in id order, ``batch`` rows at a time."""
        last = -1
        while True:
            rows = self.conn.execute(
                "SELECT id, vector FROM photos WHERE vector IS NOT NULL AND id > ? ORDER BY id LIMIT ?", (last, batch)
            ).fetchall()
            if not rows:
                return
            ids = np.fromiter((r[0] for r in rows), np.int64, len(rows))
            yield ids, self._unpack([r[1] for r in rows], dim)
            last = int(ids[-1])

    def vectors(self, ids: Iterable[int], dim: int) -> tuple[np.ndarray, np.ndarray]:
        ids = [int(i) for i in ids]
        found: list[tuple[int, bytes]] = []
        for i in range(0, len(ids), 500):
            part = ids[i : i + 500]
            q = f"SELECT id, vector FROM photos WHERE vector IS NOT NULL AND id IN ({','.join('?' * len(part))})"
            found.extend(self.conn.execute(q, part))
        return np.array([f[0] for f in found], np.int64), self._unpack([f[1] for f in found], dim)

    def sample_vectors(self, n: int, dim: int, seed: int = 0) -> np.ndarray:
        """Up to ``n`` vectors chosen at random (to train a compressed index)."""
        all_ids = np.array([r[0] for r in self.conn.execute("SELECT id FROM photos WHERE vector IS NOT NULL")], np.int64)
        if len(all_ids) > n:
            all_ids = np.sort(np.random.default_rng(seed).choice(all_ids, n, replace=False))
        return self.vectors(all_ids, dim)[1]

    def paths(self, ids: Iterable[int]) -> dict[int, str]:
        ids = [int(i) for i in ids]
        if not ids:
            return {}
        q = f"SELECT id, path FROM photos WHERE id IN ({','.join('?' * len(ids))})"
        return dict(self.conn.execute(q, ids))

    def ids_under(self, prefixes: list[str]) -> list[int]:
        """Ids of photos at these paths or inside these folders."""
        out: list[int] = []
        for p in prefixes:
            folder = p.rstrip(os.sep) + os.sep
            out.extend(r[0] for r in self.conn.execute(
                "SELECT id FROM photos WHERE path=? OR substr(path, 1, ?)=?", (p, len(folder), folder)))
        return sorted(set(out))

    @staticmethod
    def _unpack(blobs: list[bytes], dim: int) -> np.ndarray:
        if not blobs:
            return np.empty((0, dim), np.float32)
        return np.frombuffer(b"".join(blobs), dtype="<f4").reshape(len(blobs), dim).astype(np.float32)


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on any exception (Ctrl-C included)."""

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn

    def __enter__(self):
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, exc_type, exc, tb):
        self.conn.execute("COMMIT" if exc_type is None else "ROLLBACK")
        return False
