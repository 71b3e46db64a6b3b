"""`index build` and `features` stopped by SIGTERM to the whole process group (what `timeout`, SLURM and
systemd send): the photos done so far are kept, one line, exit 143, and the same command again
finishes with exactly what an uninterrupted run gives."""
from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from helpers import QUICKSTART_DATA, stop_group

pytestmark = pytest.mark.slow

FAST = ["--engine", "torch", "--precision", "fp32", "--chunk", "8", "--batch", "4", "--quiet"]


def kit(*args) -> list[str]:
    return [sys.executable, "-m", "alexnet_kit", *map(str, args)]


def stored(index: Path) -> int:
    try:
        with sqlite3.connect(f"file:{index / 'photos.sqlite'}?mode=ro", uri=True, timeout=0.1) as c:
            return c.execute("SELECT COUNT(*) FROM photos").fetchone()[0]
    except sqlite3.Error:
        return 0


def rows(index: Path) -> list[tuple]:
    """Every photo's path, checksum, error and vector (its bytes, read from the store's shards)."""
    from alexnet_kit.search.store import Store

    store = Store.open(index / "photos.sqlite")
    try:
        meta = store.conn.execute("SELECT id, path, checksum, error FROM photos ORDER BY path").fetchall()
        ids, vecs = store.vectors([m[0] for m in meta], int(store.get("dim")))
        found = {int(i): v.tobytes() for i, v in zip(ids, vecs)}
        return [(path, checksum, found.get(i), error) for i, path, checksum, error in meta]
    finally:
        store.close()


@pytest.fixture(scope="module")
def photos() -> list[Path]:
    return [QUICKSTART_DATA / c for c in ("watch", "airplanes")]


def test_sigterm_to_the_group_stops_index_build_and_the_same_command_finishes_it(tmp_path, photos, tiny_checkpoint):
    cut, whole = tmp_path / "cut.index", tmp_path / "whole.index"
    build = ["index", "build", *photos, "--model", tiny_checkpoint, *FAST]
    proc, err, _ = stop_group(kit(*build, "--out", cut), lambda: stored(cut) >= 8, signal.SIGTERM)
    assert proc.returncode == 143, err[-2000:]
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("alexnet-kit: stopped;") and str(cut) in last and "run the same command again" in last, err
    kept = stored(cut)
    n = sum(1 for d in photos for _ in d.glob("*.jpg"))
    assert 8 <= kept < n  # stopped part-way, with the photos done kept
    again = subprocess.run(kit(*build, "--out", cut), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "resumed" in again.stdout, again.stderr[-2000:]
    ref = subprocess.run(kit(*build, "--out", whole), capture_output=True, text=True, timeout=300)
    assert ref.returncode == 0, ref.stderr[-2000:]
    assert rows(cut) == rows(whole) and len(rows(whole)) == n


def test_sigterm_to_the_group_stops_features_and_the_same_command_finishes_it(tmp_path, photos, tiny_checkpoint):
    cut, whole = tmp_path / "cut.npz", tmp_path / "whole.npz"
    feats = ["features", *photos, "--model", tiny_checkpoint, *FAST]
    partial = tmp_path / "cut.npz.partial"
    proc, err, _ = stop_group(kit(*feats, "--out", cut), lambda: any(partial.glob("chunk-*.npz")), signal.SIGTERM)
    assert proc.returncode == 143, err[-2000:]
    assert "Traceback" not in err and not cut.exists()
    assert err.strip().splitlines()[-1].startswith("alexnet-kit: stopped;") and "run the same command again" in err
    again = subprocess.run(kit(*feats, "--out", cut), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "from the interrupted run" in again.stdout, again.stderr[-2000:]
    ref = subprocess.run(kit(*feats, "--out", whole), capture_output=True, text=True, timeout=300)
    assert ref.returncode == 0, ref.stderr[-2000:]
    with np.load(cut) as a, np.load(whole) as b:
        assert list(a["paths"]) == list(b["paths"]) and len(a["paths"]) > 8
        assert np.array_equal(a["vectors"], b["vectors"])  # bitwise
