"""`alexnet-kit features`: vectors of many photos to .npz / Parquet, resumable, one path with the index."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from helpers import EXAMPLES, make_checkpoint, run_cli

from alexnet_kit.errors import AlexKitError
from alexnet_kit.features_file import export_features, partial_dir, read_features
from alexnet_kit.features import FeatureExtractor
from alexnet_kit.search.builder import walk_photos


def interrupted_after(n: int, fx: FeatureExtractor) -> FeatureExtractor:
    """The real extractor on fx's engine, one photo a batch; the user presses Ctrl-C once n photos are done."""

    class CtrlC(FeatureExtractor):
        def extract(self, sources):
            for i, r in enumerate(super().extract(sources)):
                if i == n:
                    raise KeyboardInterrupt
                yield r

    return CtrlC(fx.engine, batch_photos=1)


@pytest.fixture(scope="module")
def model(tmp_path_factory, tiny_config):
    return make_checkpoint(tmp_path_factory.mktemp("fx") / "tiny.safetensors", tiny_config, seed=2)


@pytest.fixture
def corpus(tmp_path):
    """The example photos plus a truncated and an empty file."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for p in sorted(EXAMPLES.iterdir()):
        (folder / p.name).write_bytes(p.read_bytes())
    (folder / "truncated.jpg").write_bytes((EXAMPLES / "cat.jpg").read_bytes()[:1500])
    (folder / "empty.png").write_bytes(b"")
    return folder


@pytest.mark.slow
def test_cli_npz_holds_paths_vectors_fingerprint_and_lists_the_unreadable(model, corpus, tmp_path):
    out = tmp_path / "f.npz"
    proc = run_cli("features", corpus, "--out", out, "--model", model, "--engine", "torch", "--precision", "fp32", "-q")
    assert proc.returncode == 1, proc.stderr  # some photos were unreadable
    assert "Traceback" not in proc.stderr
    skipped = [l for l in proc.stderr.splitlines() if l.startswith("alexnet-kit: skipped:")]
    assert len(skipped) == 2 and any("truncated.jpg" in l for l in skipped) and any("empty.png" in l for l in skipped)
    paths, vectors, meta = read_features(out)
    good = [p for p in walk_photos([corpus]) if not p.endswith(("truncated.jpg", "empty.png"))]
    assert paths == good and vectors.shape == (len(good), 64) and vectors.dtype == np.float32
    from alexnet_kit.checkpoint import read_meta

    assert meta["fingerprint"] == read_meta(model)[1]["weights_sha256"] and meta["layer"] == "fc7"
    assert {u["path"] for u in meta["unreadable"]} == {str(corpus / "truncated.jpg"), str(corpus / "empty.png")}
    with np.load(out) as z:
        assert str(z["fingerprint"]) == meta["fingerprint"]
    # raw fc7 after ReLU, exactly what the model computes on the centre crop
    fx = FeatureExtractor.load(model, metric="euclidean")
    # batch of 5 vs one at a time: float32 summation order differs by ~1e-5 relative
    np.testing.assert_allclose(vectors, np.stack([fx.extract_one(p) for p in good]), rtol=1e-4, atol=1e-4)
    again = run_cli("features", corpus, "--out", out, "--model", model, "--engine", "torch", "--precision", "fp32", "-q")
    assert again.returncode == 2 and "already exists" in again.stderr


def test_same_vectors_as_the_index_builder(model, tmp_path):
    """One extraction path: the normalised centre-crop vectors equal what the index stores (as float16)."""
    from alexnet_kit.search import SimilarityIndex

    photos = walk_photos([EXAMPLES])
    idx = SimilarityIndex.build(photos, tmp_path / "i.index", model=model)
    try:
        rows = idx.store.rows()
        ids = [rows[p].id for p in photos]
        got_ids, stored = idx.store.vectors(ids, idx.dim)
        by_id = dict(zip(got_ids.tolist(), stored))
        stored = np.stack([by_id[i] for i in ids])
    finally:
        idx.close()
    fx = FeatureExtractor.load(model, metric="cosine")
    report = export_features(photos, tmp_path / "f.npz", fx)
    paths, vectors, _ = read_features(report.out)
    assert paths == photos
    np.testing.assert_array_equal(vectors.astype(np.float16).astype(np.float32), stored)


def test_interrupted_run_resumes_and_ends_equal(model, tmp_path):
    photos = walk_photos([EXAMPLES])
    fx = FeatureExtractor.load(model, batch_photos=1)
    whole = export_features(photos, tmp_path / "whole.npz", fx)
    out = tmp_path / "resumed.npz"
    with pytest.raises(KeyboardInterrupt):
        export_features(photos, out, interrupted_after(3, fx), chunk=1)
    assert not out.exists() and partial_dir(out).is_dir()
    assert len(list(partial_dir(out).glob("chunk-*.npz"))) >= 1
    report = export_features(photos, out, fx, chunk=1)
    assert report.resumed == 3 and report.extracted == len(photos) - report.resumed
    assert not partial_dir(out).exists()
    a, b = read_features(whole.out), read_features(out)
    assert a[0] == b[0]
    np.testing.assert_array_equal(a[1], b[1])


@pytest.mark.slow
def test_other_layers_from_a_checkpoint(model, tmp_path):
    from alexnet_kit.checkpoint import load_model
    from alexnet_kit.images import load_square

    photos = walk_photos([EXAMPLES])[:3]
    net, meta = load_model(model)
    x = meta.preprocess.crops(np.stack([load_square(p) for p in photos]), 1)
    with torch.inference_mode():
        pool5 = net.conv_features(x).numpy()
        fc6 = torch.relu(net.fc6(net.conv_features(x))).numpy()
    for layer, want in (("pool5", pool5), ("fc6", fc6)):
        out = tmp_path / f"{layer}.npz"
        proc = run_cli("features", *photos, "--out", out, "--model", model, "--layer", layer, "--engine", "torch",
                       "--precision", "fp32", "-q")
        assert proc.returncode == 0, proc.stderr
        paths, vectors, m = read_features(out)
        assert m["layer"] == layer and vectors.shape == want.shape
        np.testing.assert_allclose(vectors, want, rtol=1e-5, atol=1e-5)


@pytest.mark.slow  # over 2.5 s on 2 cores: out of make test-fast
def test_artifacts_refuse_other_layers_in_one_line(model, tmp_path):
    from alexnet_kit.export import export_checkpoint

    onnx = export_checkpoint(model, "onnx", tmp_path / "m.onnx", photos=[EXAMPLES]).path
    proc = run_cli("features", EXAMPLES, "--out", tmp_path / "f.npz", "--model", onnx, "--layer", "fc6")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "fc6 features need a checkpoint" in lines[0]
    with pytest.raises(AlexKitError, match="pool5 features need a checkpoint"):
        FeatureExtractor.load(onnx, layer="pool5")


@pytest.mark.slow  # over 2.5 s on 2 cores: out of make test-fast
def test_parquet(model, tmp_path):
    pytest.importorskip("pyarrow", reason="Parquet output needs pyarrow")
    out = tmp_path / "f.parquet"
    proc = run_cli("features", EXAMPLES, "--out", out, "--model", model, "--crops", "10", "--normalise",
                   "--engine", "torch", "--precision", "fp32", "-q")
    assert proc.returncode == 0, proc.stderr
    paths, vectors, meta = read_features(out)
    assert paths == walk_photos([EXAMPLES]) and meta["crops"] == 10 and meta["metric"] == "cosine"
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    import pyarrow.parquet as pq

    schema = pq.read_schema(out)
    assert json.loads(schema.metadata[b"alexnet_kit"])["fingerprint"] == meta["fingerprint"]


def test_bad_output_suffix_is_one_line(model, tmp_path):
    proc = run_cli("features", EXAMPLES, "--out", tmp_path / "f.csv", "--model", model, "-q")
    assert proc.returncode == 2 and ".npz or .parquet" in proc.stderr.strip().splitlines()[-1]


@pytest.mark.slow
def test_a_resumed_run_keeps_its_precision(model, tmp_path, monkeypatch):
    """bf16 vectors keep the fp32 fingerprint: the resume header and the file name the precision."""
    from alexnet_kit.engines import cpu

    if not cpu.native_bf16():
        pytest.skip("a bf16 run needs a CPU with native bf16 (amx_bf16 / avx512_bf16)")
    # this random tiny net's bf16 misses the gate's 99.5% top-1; the gate is not what is tested here
    monkeypatch.setenv("ALEXNET_KIT_GATE_MIN_TOP1", "0")
    monkeypatch.setenv("ALEXNET_KIT_GATE_MIN_COSINE", "0")
    photos = walk_photos([EXAMPLES])
    bf16 = FeatureExtractor.load(model, engine="torch", precision="bf16", batch_photos=1)
    assert bf16.precision == "bf16"
    out = tmp_path / "bf16.npz"
    with pytest.raises(KeyboardInterrupt):
        export_features(photos, out, interrupted_after(2, bf16), chunk=1)
    fp32 = FeatureExtractor.load(model, precision="fp32", batch_photos=1)  # by name: the stored verdict is bf16 here
    with pytest.raises(AlexKitError, match=r"bf16\.npz\.partial: the interrupted run computed its features in bf16, "
                                           r"this one in fp32: run it again with --precision bf16"):
        export_features(photos, out, fp32, chunk=1)
    export_features(photos, out, bf16, chunk=1)
    assert read_features(out)[2]["precision"] == "bf16"
    whole = export_features(photos, tmp_path / "fp32.npz", fp32)
    assert read_features(whole.out)[2]["precision"] == "fp32"
