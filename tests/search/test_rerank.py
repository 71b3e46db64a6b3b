"""Re-ranking a compressed index's candidates with the stored vectors, and inverted lists on disk."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from alexnet_kit.cli import main
from alexnet_kit.features import FeatureSettings
from alexnet_kit.search import IndexProblem, SimilarityIndex, builder, files
from alexnet_kit.search.capped import parse_size
from alexnet_kit.search.store import Record, Store
from helpers import quickstart_photos


def clustered(n: int, dim: int, seed: int = 0) -> np.ndarray:
    """Unit vectors around 20 centres: many near neighbours, as photos have."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((20, dim))
    x = centres[rng.integers(0, 20, n)] + 0.5 * rng.standard_normal((n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def synthetic_index(root: Path, X: np.ndarray, spec: str, max_memory: int | None = None) -> Path:
    """An index folder of ``X`` (fake photo paths) built by the builder's own finish step."""
    settings = {"model_fingerprint": "synthetic", "model_path": str(root / "no-model"), "model_trained": False,
                "features": FeatureSettings().to_json(), "dim": X.shape[1], "precision": "fp32",
                "state": "building", "index_type": spec, "roots": []}
    store = Store.create(files.store_path(root), settings)
    store.commit([Record(f"/v/{i:05d}.jpg", 1, 1, "0" * 64, x) for i, x in enumerate(X)], X.shape[1])
    builder.finish(root, store, builder.UpdateReport(), [], [], was_ok=False, max_memory=max_memory)
    store.close()
    return root


def brute_force(idx: SimilarityIndex, q: np.ndarray, top: int) -> tuple[list[int], np.ndarray]:
    """The exact order over the stored (float16) vectors: squared L2 in float64, ties by id."""
    ids, vecs = idx.store.vectors(range(1, len(idx) + 1), idx.dim, dtype=np.float64)
    d2 = ((vecs - (q / np.linalg.norm(q)).astype(np.float32).astype(np.float64)) ** 2).sum(1)
    order = np.lexsort((ids, d2))[:top]
    return ids[order].tolist(), d2[order]


def test_reranking_returns_the_exact_brute_force_order(tmp_path):
    X = clustered(600, 32)
    Q = clustered(25, 32, seed=1)
    out = synthetic_index(tmp_path / "i.index", X, "PCAR8,IVF16,SQ4")  # coarse codes: FAISS alone misorders
    with SimilarityIndex.open(out) as idx:
        assert not idx.exact and idx.rerank == 100  # the default
        missed = 0
        for q in Q:
            exact, d2 = brute_force(idx, q, 10)
            hits = idx.query_vector(q, top=10, rerank=600)  # every vector a candidate
            assert [h.id for h in hits] == exact
            np.testing.assert_allclose([h.distance for h in hits], np.sqrt(d2), rtol=1e-6)
            approx = idx.query_vector(q, top=10, rerank=0)
            faiss_ids = idx.index.search(q[None] / np.linalg.norm(q), 10)[1][0].tolist()
            assert [h.id for h in approx] == faiss_ids
            missed += len(set(exact) - {h.id for h in approx})
            default = {h.id for h in idx.query_vector(q, top=10)}
            assert len(default & set(exact)) >= len({h.id for h in approx} & set(exact))
        assert missed > 0  # without re-ranking these codes do lose neighbours


def test_an_index_that_reranks_keeps_fewer_pca_dimensions():
    from alexnet_kit.search.factory import resolve_spec

    assert resolve_spec("auto", 10**6, 4096, rerank=True) == "PCAR256,IVF2048,SQ8"
    assert resolve_spec("auto", 10**6, 4096) == "PCAR896,IVF2048,SQ8"  # --rerank 0: the codes alone rank
    assert resolve_spec("hnsw", 10**6, 4096, rerank=True) == "PCAR256,HNSW32,SQ8"
    assert resolve_spec("ivf", 10**6, 64, rerank=True) == "IVF2048,SQ8"  # nothing to reduce


def test_similar_and_build_take_rerank(tmp_path, kaiming_tiny, capsys):
    photos = quickstart_photos(tmp_path / "photos", per_class=3)
    out = tmp_path / "i.index"
    assert main(["index", "build", str(photos), "--out", str(out), "--model", str(kaiming_tiny), "-q", "--engine",
                 "torch", "--precision", "fp32", "--index-type", "PCAR8,IVF2,SQ4", "--rerank", "0"]) == 0
    probe = str(sorted(photos.rglob("*.jpg"))[0])
    with SimilarityIndex.open(out) as idx:
        assert idx.rerank == 0  # stored by the build
        stored_default = [h.id for h in idx.query(probe, top=3)]
        assert stored_default == [h.id for h in idx.query(probe, top=3, rerank=0)]
        exact = [h.id for h in idx.query(probe, top=3, rerank=50)]
    capsys.readouterr()
    assert main(["similar", probe, "-i", str(out), "-k", "3", "--rerank", "50", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["rerank"] == 50 and [h["id"] for h in doc["hits"]] == exact
    assert main(["similar", probe, "-i", str(out), "--rerank", "-1"]) == 2
    assert "--rerank must be 0" in capsys.readouterr().err
    assert parse_size("512M") == 512 << 20 and parse_size("1.5GiB") == 3 << 29 and parse_size("2GB") == 2 * 10**9
    with pytest.raises(ValueError, match="not a size"):
        parse_size("lots")


def test_lists_go_on_disk_past_the_memory_cap_and_the_folder_can_move(tmp_path):
    X = clustered(3000, 32)
    Q = clustered(10, 32, seed=1)
    memory = synthetic_index(tmp_path / "memory.index", X, "IVF16,Flat")
    disk = synthetic_index(tmp_path / "disk.index", X, "IVF16,Flat", max_memory=400 << 10)  # lists need ~600 KB
    lists = sorted(p.name for p in disk.glob("*.ivfdata"))
    assert len(lists) == 1 and not list(memory.glob("*.ivfdata"))
    moved = tmp_path / "elsewhere" / "moved.index"
    moved.parent.mkdir()
    shutil.move(disk, moved)
    with SimilarityIndex.open(memory) as a, SimilarityIndex.open(moved) as b:
        assert b.info()["lists_on_disk"] == lists[0] and a.info()["lists_on_disk"] is None
        for q in Q:  # the same training sample, the same lists: the same answers
            assert [h.id for h in a.query_vector(q, 10, rerank=0)] == [h.id for h in b.query_vector(q, 10, rerank=0)]
    store = Store.open(files.store_path(moved))  # an update writes a new lists file and drops the old one
    removed, added = store.commit([Record("/v/new.jpg", 1, 1, "0" * 64, X[0])], 32)
    builder.finish(moved, store, builder.UpdateReport(), removed, added, was_ok=True)
    store.close()
    now = sorted(p.name for p in moved.glob("*.ivfdata"))
    assert len(now) == 1 and now != lists
    with SimilarityIndex.open(moved) as b:
        assert len(b) == 3001 and b.query_vector(X[0], 2, rerank=0)[0].distance < 1e-3
    with open(moved / now[0], "r+b") as f:  # in place: truncating a file mapped by a live index is SIGBUS
        f.seek((moved / now[0]).stat().st_size // 2)
        byte = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(IndexProblem, match=r"\.ivfdata: checksum mismatch"):
        SimilarityIndex.open(moved)
