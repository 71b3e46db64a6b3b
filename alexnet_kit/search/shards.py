"""The index's full vectors on disk: append-only, memory-mapped float16 shard files.

A store's vectors live in one folder beside it (``INDEX/vectors/``) as
``shard-000000.f16``, ``shard-000001.f16``, ...: fixed-size rows of ``dim``
little-endian float16 values, ``rows_per_shard`` rows a file (about
:data:`SHARD_BYTES`). A vector's place is its slot, ``shard * rows_per_shard +
row``; slots are handed out in commit order and never reused, so a file only
ever grows at its end, and a full file is never written again.

Crash safety comes from the order of the writes (:meth:`ShardFiles.append`):
the rows of a chunk are written after the committed rows and fsynced
*before* the SQLite transaction that records them. Whatever a crash leaves
past the committed end is not referenced by the store and is cut off by the
next append, so a resumed build writes the lost chunk again in the same
place: nothing lost, nothing twice.

Integrity: the store records, per shard, its committed rows and the CRC-32
of their bytes (kept up to date chunk by chunk, as CRC-32 continues from its
previous value). :meth:`ShardFiles.check` compares sizes (cheap: a truncated
file) or sizes and checksums (every byte read once).

Reads: streaming the store (building the FAISS index, rewriting it) copies
runs of rows out of the memory-mapped files and releases the pages from the
process again (``MADV_DONTNEED``: the page cache keeps them); scattered rows
(a query's re-ranking candidates, a training sample) are read with one
``pread`` each after telling the kernel about all of them
(``POSIX_FADV_WILLNEED``), so rows not in the page cache come from disk in
parallel. Either way a process's resident memory does not grow with the
shards it has read.
"""
from __future__ import annotations

import mmap
import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from .errors import IndexProblem

DTYPE = np.dtype("<f2")
#: bytes per shard file, about: 256 MiB is 32,768 rows of a 4096-d float16 vector
SHARD_BYTES = 256 << 20
PAGE = mmap.PAGESIZE


@dataclass(frozen=True)
class ShardRecord:
    """What the store records of one shard: its committed rows and their CRC-32."""

    rows: int
    crc32: int


def rows_for(dim: int, shard_bytes: int | None = None) -> int:
    """Rows per shard file for ``dim``-d vectors."""
    return max(1, (shard_bytes or SHARD_BYTES) // (dim * DTYPE.itemsize))


def shard_name(shard: int) -> str:
    return f"shard-{shard:06d}.f16"


def to_f16(vectors: np.ndarray) -> np.ndarray:
    """float16 rows; a value beyond float16's range (65504) is refused rather than stored as inf."""
    out = np.ascontiguousarray(vectors, dtype=DTYPE)
    if not np.isfinite(out).all():
        raise ValueError("a feature value beyond float16's range (|x| > 65504) cannot be stored")
    return out


class ShardFiles:
    """The shard files of one store: append, read rows, check against the store's records."""

    def __init__(self, folder: Path, dim: int, rows_per_shard: int):
        self.folder = Path(folder)
        self.dim = dim
        self.rows_per_shard = rows_per_shard
        self.row_bytes = dim * DTYPE.itemsize
        self._maps: dict[int, mmap.mmap] = {}
        self._fds: dict[int, int] = {}

    @property
    def _fix(self) -> str:
        return f"'alexnet-kit index add {self.folder.parent} --rebuild' extracts its photos again"

    def path(self, shard: int) -> Path:
        return self.folder / shard_name(shard)

    def locate(self, slots: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return np.divmod(np.asarray(slots, np.int64), self.rows_per_shard)

    # -- writing -----------------------------------------------------------

    def append(self, start: int, block: np.ndarray, records: dict[int, ShardRecord]) -> dict[int, ShardRecord]:
        """Write ``block`` (float16 rows) at slots ``start``... right after the committed rows, fsynced.

        ``records``: the committed shards as the store has them. Returns the new
        records of the shards written, to commit in the same transaction as the rows."""
        block = to_f16(block)
        self.folder.mkdir(parents=True, exist_ok=True)
        out: dict[int, ShardRecord] = {}
        pos, slot = 0, start
        while pos < len(block):
            shard, row = divmod(slot, self.rows_per_shard)
            n = min(self.rows_per_shard - row, len(block) - pos)
            before = records.get(shard, ShardRecord(0, 0))
            if before.rows != row:
                raise RuntimeError(f"{self.path(shard)}: appending at row {row} after {before.rows} committed rows")
            data = memoryview(block[pos : pos + n]).cast("B")  # C-contiguous rows: no copy
            self._write(shard, row * self.row_bytes, data, created=row == 0)
            out[shard] = ShardRecord(row + n, zlib.crc32(data, before.crc32))
            pos, slot = pos + n, slot + n
        return out

    def _write(self, shard: int, offset: int, data: memoryview, created: bool) -> None:
        fd = os.open(self.path(shard), os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            os.ftruncate(fd, offset)  # cut what an interrupted commit left past the committed rows
            view = data
            while view:
                view = view[os.pwrite(fd, view, offset + len(data) - len(view)):]
            os.fsync(fd)
        finally:
            os.close(fd)
        if created:  # the new file's name must survive a crash too
            _fsync_dir(self.folder)
        self._forget(shard)

    # -- reading -----------------------------------------------------------

    def read(self, slots: np.ndarray) -> np.ndarray:
        """The float16 rows at ``slots`` (any order): scattered ones (re-ranking, samples) one ``pread`` each,
        runs of neighbouring rows (streaming the store) copied out of the mapped files."""
        slots = np.asarray(slots, np.int64)
        out = np.empty((len(slots), self.dim), DTYPE)
        if not len(slots):
            return out
        shards, rows = self.locate(slots)
        if 4 * len(slots) < int(slots.max() - slots.min()) + 1:
            self._pread(shards, rows, out)
            return out
        for shard in np.unique(shards):
            where = np.flatnonzero(shards == shard)
            out[where] = self._rows(int(shard), rows[where])
        return out

    def _pread(self, shards: np.ndarray, rows: np.ndarray, out: np.ndarray) -> None:
        """One read per row into ``out``; the kernel is told about all of them first, so rows not in the page
        cache are fetched from disk in parallel rather than one after the other."""
        places = [(self._fd(int(s)), int(r) * self.row_bytes, int(s)) for s, r in zip(shards, rows)]
        if len(places) > 1:
            for fd, offset, _ in places:
                os.posix_fadvise(fd, offset, self.row_bytes, os.POSIX_FADV_WILLNEED)
        raw = out.view(np.uint8)
        for i, (fd, offset, shard) in enumerate(places):
            if os.preadv(fd, [raw[i]], offset) != self.row_bytes:
                raise IndexProblem(self.path(shard), f"truncated: {os.fstat(fd).st_size} bytes, the store has a row "
                                                     f"at byte {offset}; {self._fix}")

    def _fd(self, shard: int) -> int:
        fd = self._fds.get(shard)
        if fd is None:
            if len(self._fds) >= 256:  # a file descriptor per shard read: keep it well under the process's limit
                self._close_fds()
            try:
                fd = os.open(self.path(shard), os.O_RDONLY)
            except OSError as e:
                raise IndexProblem(self.path(shard), f"cannot read the shard ({e.strerror}); {self._fix}") from None
            self._fds[shard] = fd
        return fd

    def _close_fds(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()

    def _rows(self, shard: int, rows: np.ndarray) -> np.ndarray:
        """Rows of one shard lying close together: one span of the mapped file, released again after the copy."""
        mm = self._map(shard, int(rows.max()) + 1)
        lo, hi = int(rows.min()), int(rows.max()) + 1
        start = (lo * self.row_bytes) // PAGE * PAGE
        mm.madvise(mmap.MADV_WILLNEED, start, hi * self.row_bytes - start)
        table = np.frombuffer(mm, DTYPE, count=hi * self.dim).reshape(hi, self.dim)
        got = table[rows]
        del table
        mm.madvise(mmap.MADV_DONTNEED, start, hi * self.row_bytes - start)  # out of our RSS; the page cache keeps them
        return got

    def _map(self, shard: int, rows: int) -> mmap.mmap:
        mm = self._maps.get(shard)
        if mm is None or len(mm) < rows * self.row_bytes:
            self._forget(shard)
            path = self.path(shard)
            try:
                with open(path, "rb") as f:
                    mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
            except (OSError, ValueError) as e:
                raise IndexProblem(path, f"cannot read the shard ({getattr(e, 'strerror', None) or e}); {self._fix}") from None
            if len(mm) < rows * self.row_bytes:
                mm.close()
                raise IndexProblem(path, f"truncated: {os.path.getsize(path)} bytes, the store has rows up to "
                                         f"{rows} ({rows * self.row_bytes} bytes); {self._fix}")
            mm.madvise(mmap.MADV_RANDOM)
            self._maps[shard] = mm
        return mm

    def _forget(self, shard: int) -> None:
        mm = self._maps.pop(shard, None)
        if mm is not None:
            mm.close()

    def close(self) -> None:
        for shard in list(self._maps):
            self._forget(shard)
        self._close_fds()

    # -- checking ----------------------------------------------------------

    def check(self, records: dict[int, ShardRecord], full: bool = True) -> None:
        """Raise :class:`IndexProblem`, naming the file, for the first shard that is missing, truncated or
        (``full``) whose committed bytes do not have their recorded CRC-32."""
        for shard, problem in self.problems(records, full):
            raise IndexProblem(self.path(shard), problem)

    def problems(self, records: dict[int, ShardRecord], full: bool = True) -> Iterator[tuple[int, str]]:
        """(shard, what is wrong) for each damaged shard."""
        fix = self._fix
        for shard, rec in sorted(records.items()):
            path = self.path(shard)
            want = rec.rows * self.row_bytes
            try:
                size = path.stat().st_size
            except OSError:
                yield shard, f"shard file missing ({rec.rows} rows of vectors recorded); {fix}"
                continue
            if size < want:
                yield shard, f"truncated: {size} bytes, the store records {rec.rows} rows ({want} bytes); {fix}"
            elif full and _crc(path, want) != rec.crc32:
                yield shard, f"checksum mismatch: the shard is corrupt or was modified; {fix}"


def _crc(path: Path, nbytes: int, block: int = 16 << 20) -> int:
    crc = 0
    with open(path, "rb") as f:
        while nbytes > 0:
            data = f.read(min(block, nbytes))
            if not data:
                break
            crc = zlib.crc32(data, crc)
            nbytes -= len(data)
    return crc


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
