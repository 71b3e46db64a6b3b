"""torchrun-sharded extraction: 2 gloo processes each write a shard, rank 0 merges them into one index."""
from __future__ import annotations

import shutil
import subprocess
import sys

import numpy as np
import pytest

from alexnet_kit.search import SimilarityIndex, builder
from helpers import ROOT, make_checkpoint, shared


@pytest.mark.slow
def test_two_process_build_equals_single_process_build(tmp_path, tiny_config):
    model = make_checkpoint(tmp_path / "tiny.safetensors", tiny_config)
    photos = tmp_path / "photos"
    photos.mkdir()
    for p in sorted(shared("imagenet-samples").glob("*.JPEG"))[::90]:
        shutil.copy(p, photos / p.name)
    (photos / "broken.jpg").write_bytes(b"\xff\xd8\xff not really")
    out = tmp_path / "dist.index"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "alexnet_kit.search.distributed", str(photos), "--out", str(out), "--model", str(model), "-q", "--chunk", "3"]
    run = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "rank 0/2" in run.stderr and "rank 1/2" in run.stderr
    assert run.stderr.count("listed 13 photos") == 1  # one walk of the tree, not one per rank
    assert "12 photos indexed" in run.stdout and "1 unreadable" in run.stdout
    assert not (out / "shards").exists()

    single = builder.build([photos], tmp_path / "single.index", model)
    with SimilarityIndex.open(out) as a, SimilarityIndex.open(tmp_path / "single.index") as b:
        assert len(a) == len(b) == 12
        rows_a, rows_b = a.store.rows(), b.store.rows()
        assert set(rows_a) == set(rows_b)
        for path in rows_a:
            if rows_a[path].ok:
                va = a.store.vectors([rows_a[path].id], a.dim)[1]
                vb = b.store.vectors([rows_b[path].id], b.dim)[1]
                np.testing.assert_allclose(va, vb, rtol=2**-10, atol=1e-5)  # float16 store: one rounding step apart at most
        q = sorted(photos.glob("*.JPEG"))[4]
        assert [h.path for h in a.query(q, top=5)] == [h.path for h in b.query(q, top=5)]
    assert single.extracted == 12


@pytest.mark.slow
def test_a_missing_folder_stops_every_rank_with_one_line(tmp_path, tiny_config):
    """Rank 0 walks alone; its error reaches the other rank instead of leaving it waiting."""
    model = make_checkpoint(tmp_path / "tiny.safetensors", tiny_config)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "alexnet_kit.search.distributed", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x.index"),
           "--model", str(model), "-q"]
    run = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode != 0
    # torchrun prints its own ChildFailedError traceback; the ranks print one line each
    assert run.stderr.count("nowhere: no such file or folder") == 2 and "AlexKitError" not in run.stderr
