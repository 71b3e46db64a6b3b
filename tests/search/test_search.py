"""Similarity queries on real photos: copies and mirrors, self-exclusion, refusals."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image, ImageOps

from alexnet_kit.cli import main
from alexnet_kit.search import IndexMismatch, SimilarityIndex
from helpers import make_checkpoint, shared


@pytest.fixture(scope="module")
def collection(tmp_path_factory):
    """10 real ImageNet photos, a real photo (lossless PNG), its exact copy and its mirror image."""
    d = tmp_path_factory.mktemp("collection")
    for p in sorted(shared("imagenet-samples").glob("*.JPEG"))[::100]:
        shutil.copy(p, d / p.name)
    shutil.copy(shared("photos", "chelsea.png"), d / "cat.png")
    shutil.copy(d / "cat.png", d / "cat_copy.png")
    ImageOps.mirror(Image.open(d / "cat.png").convert("RGB")).save(d / "cat_mirror.png")
    return d


@pytest.fixture(scope="module")
def ten_crop_index(kaiming_tiny, collection, tmp_path_factory):
    out = tmp_path_factory.mktemp("idx") / "ten.index"
    return SimilarityIndex.build(collection, out, model=kaiming_tiny, crops=10, precision="fp32")


def test_exact_copy_and_mirror_come_first_with_ten_crop_features(ten_crop_index, collection):
    """Ten-crop features are mirror-invariant by construction (§4.1's crop set is closed under
    mirroring), so here both must be the two nearest, at cosine 1, clearly above every other photo."""
    hits = ten_crop_index.query(collection / "cat.png", top=4)
    assert {h.path for h in hits[:2]} == {str(collection / "cat_copy.png"), str(collection / "cat_mirror.png")}
    assert all(h.score > 1 - 1e-6 for h in hits[:2])
    assert hits[2].score < 1 - 1e-3
    assert str(collection / "cat.png") not in [h.path for h in hits]  # the query itself is left out


def test_exact_copy_comes_first_with_centre_crop_features(kaiming_tiny, collection, tmp_path):
    """With one centre crop the network is not mirror-invariant: the mirror is not guaranteed to be near
    (an untrained network ranks it anywhere); the exact copy must still be first, at distance 0."""
    idx = SimilarityIndex.build(collection, tmp_path / "one.index", model=kaiming_tiny, crops=1)
    hits = idx.query(collection / "cat.png", top=3)
    assert hits[0].path == str(collection / "cat_copy.png")
    assert hits[0].distance < 1e-5 and hits[1].distance > 1e-3
    # a photo from outside the index (no self to leave out) finds its twin inside at the top
    outside = tmp_path / "outside.png"
    shutil.copy(collection / "cat.png", outside)
    hits = idx.query(outside, top=2)
    assert {hits[0].path, hits[1].path} == {str(collection / "cat.png"), str(collection / "cat_copy.png")}


def test_query_takes_bytes_and_pil_images_and_top_larger_than_index(ten_crop_index, collection):
    img = Image.open(collection / "cat.png")
    by_pil = ten_crop_index.query(img, top=3)
    by_bytes = ten_crop_index.query((collection / "cat.png").read_bytes(), top=3)
    by_array = ten_crop_index.query(np.asarray(img.convert("RGB")), top=3)
    assert [h.path for h in by_array] == [h.path for h in by_pil]
    # not a path in the index: nothing is left out, so the photo itself is among the first three
    assert {h.path for h in by_pil} == {h.path for h in by_bytes}
    assert str(collection / "cat.png") in {h.path for h in by_pil}
    assert len(ten_crop_index.query(collection / "cat.png", top=100)) == len(ten_crop_index) - 1


def test_other_model_is_refused_in_one_line(ten_crop_index, collection, tmp_path, tiny_config, capsys):
    other = make_checkpoint(tmp_path / "other.safetensors", tiny_config, seed=7)
    idx = SimilarityIndex.open(ten_crop_index.root, model=other)
    query = tmp_path / "new.png"
    shutil.copy(collection / "cat.png", query)
    with pytest.raises(IndexMismatch, match="built with model"):
        idx.query(query)
    idx.close()
    assert main(["similar", str(query), "--index", str(ten_crop_index.root), "--model", str(other)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "built with model" in err and "Traceback" not in err


def test_other_feature_setting_is_refused(ten_crop_index, collection, capsys):
    with pytest.raises(IndexMismatch, match="centre crop"):
        SimilarityIndex.open(ten_crop_index.root, crops=1)
    with pytest.raises(IndexMismatch, match="Euclidean"):
        SimilarityIndex.open(ten_crop_index.root, metric="euclidean")
    assert main(["similar", str(collection / "cat.png"), "--index", str(ten_crop_index.root), "--crops", "1"]) == 2
    assert "mean of ten crops" in capsys.readouterr().err


def test_similar_cli_json(ten_crop_index, collection, capsys):
    assert main(["similar", str(collection / "cat.png"), "--index", str(ten_crop_index.root), "--top", "2", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["exact"] is True and doc["metric"] == "cosine"
    assert {h["path"] for h in doc["hits"]} == {str(collection / "cat_copy.png"), str(collection / "cat_mirror.png")}
    assert all(set(h) == {"path", "score", "distance", "id"} for h in doc["hits"])


def test_similar_cli_bad_query_photo_is_one_line(ten_crop_index, tmp_path, capsys):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not a photo")
    assert main(["similar", str(bad), "--index", str(ten_crop_index.root)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and str(bad) in err


def test_euclidean_index_scores_are_negative_distances(kaiming_tiny, collection, tmp_path):
    idx = SimilarityIndex.build(collection, tmp_path / "euc.index", model=kaiming_tiny, metric="euclidean")
    hits = idx.query(collection / "cat.png", top=3)
    assert hits[0].path == str(collection / "cat_copy.png")
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    np.testing.assert_allclose([h.score for h in hits], [-h.distance for h in hits])
    assert hits[1].distance > 1e-2  # raw features: distances are not on the unit sphere


def test_queries_from_several_threads(ten_crop_index, collection):
    """The demo answers from worker threads: one index object must serve them all."""
    from concurrent.futures import ThreadPoolExecutor

    photos = sorted(collection.glob("*.JPEG"))[:4] + [collection / "cat.png"]
    want = [[h.path for h in ten_crop_index.query(p, top=3)] for p in photos]
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda p: [h.path for h in ten_crop_index.query(p, top=3)], photos * 2))
    assert got == want * 2
