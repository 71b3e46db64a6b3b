"""The float16 shard store: growing across files, commits cut short, a build killed while writing shards,
damaged shards named in one line, and old folders (vectors inside SQLite) working and migrating."""
from __future__ import annotations

import json
import signal
import sqlite3
import sys
from pathlib import Path

import numpy as np
import pytest

from alexnet_kit.cli import main
from alexnet_kit.features import FeatureSettings
from alexnet_kit.search import IndexProblem, SimilarityIndex, builder, shards
from alexnet_kit.search.store import Record, Store
from helpers import quickstart_photos, stop_group


def unit_rows(n: int, dim: int, seed: int = 0) -> np.ndarray:
    x = np.abs(np.random.default_rng(seed).standard_normal((n, dim))).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def new_store(path: Path, dim: int, rows_per_shard: int) -> Store:
    return Store.create(path, {"dim": dim, "features": FeatureSettings().to_json()}, rows_per_shard=rows_per_shard)


def records(X: np.ndarray, start: int = 0, name: str = "p") -> list[Record]:
    return [Record(f"/{name}/{start + i:04d}.jpg", 1, 1, "0" * 64, x) for i, x in enumerate(X)]


def test_the_store_grows_across_shard_files_and_a_rewrite_reclaims_dead_rows(tmp_path):
    from alexnet_kit.search.rewrite import rewrite

    store = new_store(tmp_path / "photos.sqlite", 8, rows_per_shard=4)
    X = unit_rows(10, 8)
    for part in (slice(0, 3), slice(3, 9), slice(9, 10)):  # commits that end inside and across files
        store.commit(records(X[part], part.start), 8)
    names = sorted(p.name for p in (tmp_path / "vectors").iterdir())
    assert names == ["shard-000000.f16", "shard-000001.f16", "shard-000002.f16"]
    assert [(tmp_path / "vectors" / n).stat().st_size for n in names] == [4 * 16, 4 * 16, 2 * 16]
    ids, got = store.vectors(range(1, 11), 8)
    np.testing.assert_array_equal(got[np.argsort(ids)], X.astype(np.float16).astype(np.float32))
    streamed = np.concatenate([v for _, v in store.iter_vectors(8, batch=3)])
    np.testing.assert_array_equal(streamed, X.astype(np.float16).astype(np.float32))
    store.commit(records(X[:2][::-1], 0), 8)  # two photos changed: new ids, new rows; the old rows are dead
    assert store.dead_rows() == 2 and store.count() == (10, 0)
    store.close()
    store, dropped = rewrite(tmp_path / "photos.sqlite")
    assert dropped == 0 and store.dead_rows() == 0 and store.shards.folder.name == "vectors-1"
    assert not (tmp_path / "vectors").exists() and store.next_slot() == 10
    assert sorted(r.id for r in store.rows().values()) == list(range(3, 13))  # ids carry over
    store.close()


def test_a_commit_cut_short_after_the_shard_write_leaves_nothing_behind(tmp_path, monkeypatch):
    """The shard bytes are written and fsynced before the SQLite transaction commits: when that fails,
    the bytes past the committed end are not the store's, and the next commit writes over them."""
    store = new_store(tmp_path / "photos.sqlite", 8, rows_per_shard=4)
    X = unit_rows(11, 8)
    store.commit(records(X[:6]), 8)
    monkeypatch.setattr(Store, "_bump", lambda self: (_ for _ in ()).throw(RuntimeError("power cut")))
    with pytest.raises(RuntimeError, match="power cut"):
        store.commit(records(X[6:], 6), 8)
    monkeypatch.undo()
    sizes = [p.stat().st_size for p in sorted((tmp_path / "vectors").iterdir())]
    assert sizes == [64, 64, 48] and store.count() == (6, 0)  # written past the end, not recorded
    store.check_vectors(full=True)
    store.commit(records(X[6:], 6), 8)
    assert [p.stat().st_size for p in sorted((tmp_path / "vectors").iterdir())] == [64, 64, 48]
    slots = store.conn.execute("SELECT shard * 4 + row FROM photos ORDER BY id").fetchall()
    assert [s for (s,) in slots] == list(range(11)) and store.dead_rows() == 0
    np.testing.assert_array_equal(np.concatenate([v for _, v in store.iter_vectors(8)]),
                                  X.astype(np.float16).astype(np.float32))
    store.close()


DRIVER = """
import sys, time
from alexnet_kit.search import shards
shards.SHARD_BYTES = 3 * 64 * 2  # 3 rows a shard for the tiny model's 64-d vectors: commits cross files
write = shards.ShardFiles._write
def slow(self, *args, **kw):
    write(self, *args, **kw)
    time.sleep(0.4)  # widen the window between the shard's fsync and the SQLite commit
shards.ShardFiles._write = slow
from alexnet_kit.cli import main
sys.exit(main(sys.argv[1:]))
"""


def window(out: Path):
    """(photos committed, shard bytes on disk): more bytes than committed rows means mid-commit."""
    try:
        with sqlite3.connect(f"file:{out / 'photos.sqlite'}?mode=ro", uri=True, timeout=0.1) as c:
            n = c.execute("SELECT COUNT(*) FROM photos WHERE shard IS NOT NULL").fetchone()[0]
    except sqlite3.Error:
        return 0, 0
    return n, sum(p.stat().st_size for p in (out / "vectors").glob("*.f16"))


@pytest.mark.slow
def test_a_build_killed_while_writing_shards_resumes_with_nothing_lost_or_twice(tmp_path, tiny_checkpoint):
    from alexnet_kit.features import FeatureExtractor

    photos = quickstart_photos(tmp_path / "photos", per_class=6)
    out = tmp_path / "cut.index"
    cmd = [sys.executable, "-c", DRIVER, "index", "build", photos, "--out", out, "--model", tiny_checkpoint,
           "--engine", "torch", "--precision", "fp32", "--chunk", "2", "--batch", "2", "-q"]

    def mid_commit():
        n, size = window(out)
        return n >= 4 and size > n * 128

    proc, err, seen = stop_group(cmd, mid_commit, signal.SIGKILL, just_before=lambda: window(out))
    assert proc.returncode == -signal.SIGKILL, err[-2000:]
    assert seen[1] > seen[0] * 128  # killed with shard bytes written that no transaction recorded
    fx = FeatureExtractor.load(tiny_checkpoint, engine="torch", precision="fp32", batch_photos=2)
    report = builder.build([photos], out, tiny_checkpoint, extractor=fx, chunk=2)
    assert report.resumed and report.extracted == 18 - report.unchanged
    ref = builder.build([photos], tmp_path / "whole.index", tiny_checkpoint, extractor=fx, chunk=2)
    assert ref.extracted == 18
    cut, whole = (Store.open(p / "photos.sqlite") for p in (out, tmp_path / "whole.index"))  # full checksums
    assert cut.count() == whole.count() == (18, 0) and cut.dead_rows() == 0
    assert cut.shards.rows_per_shard == 3 and sum(p.stat().st_size for p in (out / "vectors").iterdir()) == 18 * 128
    slots = sorted(s * 3 + r for s, r in cut.conn.execute("SELECT shard, row FROM photos"))
    assert slots == list(range(18))  # every row once
    a, b = by_path(cut), by_path(whole)
    assert a.keys() == b.keys() and all(np.array_equal(a[p], b[p]) for p in a)  # bitwise: the same batches
    cut.close()
    whole.close()


def _all(store: Store):
    ids, vecs = next(store.iter_vectors(int(store.get("dim")), batch=1000))
    return ids.tolist(), vecs


def by_path(store: Store) -> dict[str, np.ndarray]:
    ids, vecs = _all(store)
    paths = store.paths(ids)
    return {paths[i]: v for i, v in zip(ids, vecs)}


def test_a_damaged_shard_is_named_in_one_line_and_rebuild_extracts_its_photos_again(tmp_path, kaiming_tiny,
                                                                                     monkeypatch, capsys):
    monkeypatch.setattr(shards, "SHARD_BYTES", 4 * 64 * 2)  # 4 rows a shard
    photos = quickstart_photos(tmp_path / "photos", per_class=3)
    out = tmp_path / "i.index"
    assert main(["index", "build", str(photos), "--out", str(out), "--model", str(kaiming_tiny), "-q", "--engine", "torch",
                 "--precision", "fp32", "--index-type", "ivf", "--rerank", "5", "--max-memory", "64M"]) == 0
    capsys.readouterr()
    assert main(["index", "info", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["rerank"] == 5 and info["vectors"] == {"layout": "shards", "dtype": "float16", "bytes": 9 * 128,
                                                       "dead_rows": 0}
    with SimilarityIndex.open(out) as idx:
        before = {h.path: h.score for h in idx.query(next(photos.rglob("*.jpg")), top=8)}
    shard = out / "vectors" / "shard-000001.f16"
    data = bytearray(shard.read_bytes())
    data[77] ^= 0x40
    shard.write_bytes(bytes(data))
    assert main(["index", "info", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and str(shard) in err and "checksum mismatch" in err and "--rebuild" in err
    assert main(["index", "add", str(out), "--rebuild", "-q"]) == 0
    assert "4 photos of damaged shards dropped" in capsys.readouterr().out
    with SimilarityIndex.open(out) as idx:  # the 4 photos went through the network again: the same vectors
        after = {h.path: h.score for h in idx.query(next(photos.rglob("*.jpg")), top=8)}
        assert len(idx) == 9 and idx.store.shards.folder.name == "vectors-1"
    assert after.keys() == before.keys() and all(abs(after[p] - before[p]) < 1e-3 for p in after)
    last = out / "vectors-1" / "shard-000002.f16"
    last.write_bytes(last.read_bytes()[:100])
    with pytest.raises(IndexProblem, match=r"shard-000002\.f16: truncated: 100 bytes"):
        SimilarityIndex.open(out, verify=False)  # sizes are checked even without the checksums


def test_an_old_index_folder_works_as_it_is_and_rebuild_moves_its_vectors_to_shards(tmp_path, kaiming_tiny,
                                                                                    monkeypatch, capsys):
    create = Store.create.__func__
    monkeypatch.setattr(Store, "create", classmethod(lambda cls, path, settings, **kw: create(cls, path, settings,
                                                                                               legacy=True)))
    photos = quickstart_photos(tmp_path / "photos", per_class=2)
    out = tmp_path / "old.index"
    builder.build([photos], out, kaiming_tiny)
    monkeypatch.undo()
    with sqlite3.connect(out / "photos.sqlite") as c:  # what alexnet-kit wrote before the shards
        assert "shard" not in [r[1] for r in c.execute("PRAGMA table_info(photos)")]
        assert c.execute("SELECT COUNT(vector) FROM photos").fetchone()[0] == 6
    more = quickstart_photos(tmp_path / "more", per_class=3, classes=("Motorbikes",))
    assert main(["index", "add", str(out), str(more), "-q"]) == 0  # still written the old way
    probe = sorted((more / "Motorbikes").iterdir())[0]
    with SimilarityIndex.open(out) as idx:
        assert idx.store.layout == "sqlite" and len(idx) == 9 and not (out / "vectors").exists()
        ids, old = _all(idx.store)
        query = [(h.path, h.id) for h in idx.query(probe, top=4)]
    capsys.readouterr()
    assert main(["index", "add", str(out), "--rebuild", "-q"]) == 0
    assert "vectors moved to float16 shards" in capsys.readouterr().out
    with SimilarityIndex.open(out) as idx:
        assert idx.store.layout == "shards" and idx.store.get("version") == 2 and len(idx) == 9
        new_ids, new = _all(idx.store)
        assert new_ids == ids  # the same ids
        np.testing.assert_array_equal(new, old.astype(np.float16).astype(np.float32))
        assert idx.store.conn.execute("SELECT COUNT(vector) FROM photos").fetchone()[0] == 0
        again = [(h.path, h.id) for h in idx.query(probe, top=4)]
    assert again == query
