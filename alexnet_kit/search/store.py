"""The index's metadata store: one SQLite file, the source of truth, and its vectors beside it.

Every photo the index has seen is one row: its path, size, modification
time and SHA-256 (to tell new and changed files from unchanged ones), and
either where its feature vector is or the reason it could not be read (so
an unchanged bad file is not retried every time). The vectors are kept so
the FAISS index can be rebuilt, retrained or re-typed, and its candidates
re-ranked exactly, without running the network again. A ``settings`` table
records what every vector means: the model's fingerprint and the feature
settings; the index refuses anything else.

Where the vectors are (``settings.vectors``): since store version 2, in
append-only float16 shard files beside the store (:mod:`.shards`), each
row recording its ``shard`` and ``row`` and a ``shards`` table each file's
committed rows and CRC-32. Stores of version 1 hold float32 vectors in the
``vector`` column; they open and work as they are, and ``index add INDEX
--rebuild`` moves them to shards (:mod:`.rewrite`).

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
from .shards import ShardFiles, ShardRecord, rows_for

FORMAT = "alexnet-kit-index"
VERSION = 2  # 1: vectors in the photos table (still read and written); 2: vectors in shard files

#: the schema of version 1 (vectors as float32 BLOBs), still created for temporary per-rank stores
SCHEMA_V1 = """
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

SCHEMA = """
CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS photos (
    id INTEGER PRIMARY KEY AUTOINCREMENT,  -- the FAISS id; never reused
    path TEXT NOT NULL UNIQUE,             -- absolute
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    checksum TEXT NOT NULL,                -- sha256 of the file's bytes
    vector BLOB,                           -- unused since version 2 (NULL)
    shard INTEGER,                         -- where the vector is: shard file and row; NULL when unreadable
    row INTEGER,
    error TEXT,                            -- why it could not be read, NULL when fine
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS shards (
    shard INTEGER PRIMARY KEY,             -- vectors/shard-NNNNNN.f16
    rows INTEGER NOT NULL,                 -- committed rows
    crc32 INTEGER NOT NULL                 -- of the committed rows' bytes
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
        layout = self.get("vectors") or {}
        #: the shard files of a version-2 store; None for vectors in the photos table (version 1)
        self.shards: ShardFiles | None = None
        if layout.get("layout") == "shards":
            self.shards = ShardFiles(path.parent / layout["dir"], int(self.get("dim")), int(layout["rows_per_shard"]))
        self._has = "shard IS NOT NULL" if self.shards else "vector IS NOT NULL"  # the rows holding a vector

    # -- opening ---------------------------------------------------------

    @classmethod
    def create(cls, path: str | os.PathLike, settings: dict[str, object], *, legacy: bool = False,
               vectors_dir: str = "vectors", rows_per_shard: int | None = None) -> "Store":
        """A new store; ``settings`` must hold ``dim``. ``legacy``: vectors in SQLite (store version 1),
        as temporary per-rank stores keep them; else in shard files in ``vectors_dir`` beside it."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        conn.executescript(SCHEMA_V1 if legacy else SCHEMA)
        values = {"format": FORMAT, "version": 1 if legacy else VERSION, "content_version": 0, "created": time.time()}
        if not legacy:
            rows = rows_per_shard or rows_for(int(settings["dim"]))
            values["vectors"] = {"layout": "shards", "dir": vectors_dir, "dtype": "float16", "rows_per_shard": rows}
        with _Transaction(conn):
            conn.executemany("INSERT OR REPLACE INTO settings(key, value) VALUES(?, ?)",
                             [(k, json.dumps(v)) for k, v in {**values, **settings}.items()])
        return cls(path, conn)

    @classmethod
    def open(cls, path: str | os.PathLike, verify: bool = True) -> "Store":
        """Open an existing store; a damaged or foreign file raises :class:`IndexProblem`.

        ``verify``: SQLite's quick_check and every shard's CRC-32 (each byte read once); without it
        only the shards' sizes are checked."""
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
            if not {"settings", "photos"} <= tables:
                raise IndexProblem(path, "not an alexnet-kit index store (tables missing)")
            fmt, version = _setting(conn, "format"), _setting(conn, "version")
        except sqlite3.DatabaseError as e:
            raise IndexProblem(path, f"corrupt metadata store, or not one (sqlite: {e})") from None
        if fmt != FORMAT:
            raise IndexProblem(path, "not an alexnet-kit index store")
        if not isinstance(version, int) or version > VERSION:
            raise IndexProblem(path, f"written by a newer alexnet-kit (store version {version}); upgrade alexnet-kit")
        try:
            store = cls(path, conn)
        except sqlite3.DatabaseError as e:
            raise IndexProblem(path, f"corrupt metadata store (sqlite: {e})") from None
        try:
            store.check_vectors(full=verify)
        except IndexProblem:
            store.close()
            raise
        return store

    def close(self) -> None:
        if self.shards is not None:
            self.shards.close()
        self.conn.close()

    def transaction(self):
        return _Transaction(self.conn)

    # -- settings --------------------------------------------------------

    def get(self, key: str, default=None):
        value = _setting(self.conn, key)
        return default if value is None else value

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

    @property
    def layout(self) -> str:
        """Where the vectors are: ``"shards"`` (version 2) or ``"sqlite"`` (version 1)."""
        return "shards" if self.shards else "sqlite"

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
        an incremental update of the FAISS index. In a version-2 store the
        vectors are appended to the shards and fsynced before the transaction
        commits (see :mod:`.shards`)."""
        records = list(records)
        vecs = [_checked(r.vector, dim) for r in records if r.vector is not None]
        removed: list[int] = []
        added: list[int] = []
        now = time.time()
        with self.transaction():
            if self.shards:
                places = self._append(vecs)  # (shard, row) of each vector, written and fsynced
            else:
                places = [v.astype("<f4").tobytes() for v in vecs]  # version 1: the float32 bytes themselves
            k = 0
            for r in records:
                old = self.conn.execute("SELECT id FROM photos WHERE path=?", (r.path,)).fetchone()
                if old:
                    self.conn.execute("DELETE FROM photos WHERE id=?", (old[0],))
                    removed.append(old[0])
                place = None
                if r.vector is not None:
                    place, k = places[k], k + 1
                cur = self._insert(r, place, now)
                if place is not None:
                    added.append(int(cur.lastrowid))
            self._bump()
        return removed, added

    def _insert(self, r: Record, place, now: float):
        """One row; ``place``: the vector's (shard, row), or in a version-1 store its bytes."""
        if self.shards is None:
            return self.conn.execute(
                "INSERT INTO photos(path, size, mtime_ns, checksum, vector, error, updated) VALUES(?,?,?,?,?,?,?)",
                (r.path, r.size, r.mtime_ns, r.checksum, place, r.error, now))
        shard, row = place if place is not None else (None, None)
        return self.conn.execute(
            "INSERT INTO photos(path, size, mtime_ns, checksum, shard, row, error, updated) VALUES(?,?,?,?,?,?,?,?)",
            (r.path, r.size, r.mtime_ns, r.checksum, shard, row, r.error, now))

    def _append(self, vecs: list[np.ndarray]) -> list[tuple[int, int]]:
        """Write ``vecs`` after the committed rows (inside the caller's transaction): their (shard, row)."""
        if not vecs:
            return []
        records = self.shard_records()
        start = self.next_slot(records)
        written = self.shards.append(start, np.stack(vecs), records)
        self.conn.executemany("INSERT OR REPLACE INTO shards(shard, rows, crc32) VALUES(?,?,?)",
                              [(s, rec.rows, rec.crc32) for s, rec in written.items()])
        shard, row = self.shards.locate(np.arange(start, start + len(vecs)))
        return list(zip(shard.tolist(), row.tolist()))

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

    # -- vectors ---------------------------------------------------------

    def iter_vectors(self, dim: int, batch: int = 8192) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(ids int64, vectors float32 (k, dim)) in id order, ``batch`` rows at a time."""
        what = "id, shard, row" if self.shards else "id, vector"
        last = -1
        while True:
            rows = self.conn.execute(
                f"SELECT {what} FROM photos WHERE {self._has} AND id > ? ORDER BY id LIMIT ?", (last, batch)
            ).fetchall()
            if not rows:
                return
            ids = np.fromiter((r[0] for r in rows), np.int64, len(rows))
            yield ids, self._read(rows, dim)
            last = int(ids[-1])

    def vectors(self, ids: Iterable[int], dim: int, dtype=np.float32) -> tuple[np.ndarray, np.ndarray]:
        """(the ids found with a vector, their vectors as ``dtype``), in the same order as each other."""
        ids = [int(i) for i in ids]
        what = "id, shard, row" if self.shards else "id, vector"
        found: list[tuple] = []
        for i in range(0, len(ids), 500):
            part = ids[i : i + 500]
            q = f"SELECT {what} FROM photos WHERE {self._has} AND id IN ({','.join('?' * len(part))})"
            found.extend(self.conn.execute(q, part))
        return np.array([f[0] for f in found], np.int64), self._read(found, dim, dtype)

    def _read(self, rows: list[tuple], dim: int, dtype=np.float32) -> np.ndarray:
        """Vectors of (id, vector) or (id, shard, row) rows, as ``dtype``."""
        if self.shards is None:
            return self._unpack([r[1] for r in rows], dim).astype(dtype, copy=False)
        if dim != self.shards.dim:
            raise ValueError(f"asked for {dim}-d vectors of a {self.shards.dim}-d store")
        if not rows:
            return np.empty((0, dim), dtype)
        place = np.array([(r[1], r[2]) for r in rows], np.int64)
        return self.shards.read(place[:, 0] * self.shards.rows_per_shard + place[:, 1]).astype(dtype)

    def sample_ids(self, n: int, seed: int = 0) -> np.ndarray:
        """Up to ``n`` ids of photos with a vector, chosen at random, sorted."""
        all_ids = np.array([r[0] for r in self.conn.execute(f"SELECT id FROM photos WHERE {self._has}")], np.int64)
        if len(all_ids) > n:
            all_ids = np.sort(np.random.default_rng(seed).choice(all_ids, n, replace=False))
        return all_ids

    def sample_vectors(self, n: int, dim: int, seed: int = 0) -> np.ndarray:
        """Up to ``n`` vectors chosen at random (to train a compressed index)."""
        return self.vectors(self.sample_ids(n, seed), dim)[1]

    # -- the shard files -------------------------------------------------

    def shard_records(self) -> dict[int, ShardRecord]:
        if self.shards is None:
            return {}
        return {s: ShardRecord(rows, crc) for s, rows, crc in self.conn.execute("SELECT shard, rows, crc32 FROM shards")}

    def next_slot(self, records: dict[int, ShardRecord] | None = None) -> int:
        """The slot the next vector goes to: right after the last committed row."""
        records = self.shard_records() if records is None else records
        if not records:
            return 0
        last = max(records)
        return last * self.shards.rows_per_shard + records[last].rows

    def check_vectors(self, full: bool = True) -> None:
        """Raise :class:`IndexProblem` naming the first shard file that is missing, truncated or
        (``full``) changed; nothing to check for vectors kept in SQLite."""
        if self.shards is not None:
            self.shards.check(self.shard_records(), full)

    def dead_rows(self) -> int:
        """Shard rows no photo points at any more (changed or removed photos): reclaimed by a rewrite."""
        if self.shards is None:
            return 0
        live = self.conn.execute(f"SELECT COUNT(*) FROM photos WHERE {self._has}").fetchone()[0]
        return sum(r.rows for r in self.shard_records().values()) - int(live)

    def vector_bytes(self) -> int:
        """Bytes of the shard files (0 for vectors kept in SQLite)."""
        if self.shards is None or not self.shards.folder.is_dir():
            return 0
        return sum(p.stat().st_size for p in self.shards.folder.glob("shard-*.f16"))

    # -- places ----------------------------------------------------------

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


def _setting(conn: sqlite3.Connection, key: str):
    row = conn.execute("SELECT value FROM settings WHERE key=?", (key,)).fetchone()
    return json.loads(row[0]) if row else None


def _checked(vector: np.ndarray, dim: int) -> np.ndarray:
    v = np.asarray(vector, dtype=np.float32)
    if v.shape != (dim,):
        raise ValueError(f"vector of shape {v.shape} for a {dim}-d index")
    return v


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
