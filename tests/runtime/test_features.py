"""fc7 features: what the extractor returns, from real photos."""
from __future__ import annotations


import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from alexnet_kit.engines import load_engine
from alexnet_kit.features import FeatureExtractor, FeatureSettings
from alexnet_kit.images import load_square
from helpers import shared


@pytest.fixture(scope="module")
def photos():
    d = shared("imagenet-samples")
    return sorted(d.glob("*.JPEG"))[::125]  # 8 real photos of different classes


def test_centre_crop_features_are_fc7_after_relu_normalised(kaiming_tiny, photos):
    fx = FeatureExtractor.load(kaiming_tiny, crops=1, precision="fp32")  # compared with fp32 below
    got = [r.vector for r in fx.extract(photos)]
    engine = load_engine(kaiming_tiny)
    x = engine.meta.preprocess.crops(np.stack([load_square(p) for p in photos]), 1)
    with torch.inference_mode():
        raw = engine.model.fc7_features(x).numpy()
    assert (raw >= 0).all() and (raw > 0).any()  # after the ReLU
    want = raw / np.linalg.norm(raw, axis=1, keepdims=True)
    np.testing.assert_allclose(np.stack(got), want, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(np.stack(got), axis=1), 1.0, atol=1e-5)


def test_euclidean_keeps_raw_features_and_ten_crops_average_them(kaiming_tiny, photos):
    engine = load_engine(kaiming_tiny)
    raw10 = FeatureExtractor(engine, crops=10, metric="euclidean").extract_one(photos[0])
    x = engine.meta.preprocess.crops(load_square(photos[0])[None], 10)
    with torch.inference_mode():
        per_crop = engine.model.fc7_features(x).numpy()
    np.testing.assert_allclose(raw10, per_crop.mean(0), rtol=1e-5, atol=1e-6)
    assert not np.isclose(np.linalg.norm(raw10), 1.0)


def test_ten_crop_features_are_mirror_invariant_centre_crop_is_not(kaiming_tiny, tmp_path):
    """§4.1's ten crops are the five crops and their mirrors, so a mirrored photo has the
    same crop set: its feature is the same vector. One centre crop has no such symmetry."""
    src = shared("photos", "chelsea.png")
    mirror = tmp_path / "mirror.png"
    ImageOps.mirror(Image.open(src).convert("RGB")).save(mirror)
    ten = FeatureExtractor.load(kaiming_tiny, crops=10)
    np.testing.assert_allclose(ten.extract_one(src), ten.extract_one(mirror), atol=1e-6)
    one = FeatureExtractor.load(kaiming_tiny, crops=1)
    assert np.abs(one.extract_one(src) - one.extract_one(mirror)).max() > 1e-3


def test_bad_photos_become_errors_in_place(kaiming_tiny, photos, tmp_path):
    bad = tmp_path / "truncated.jpg"
    bad.write_bytes(photos[0].read_bytes()[:2000])
    missing = tmp_path / "missing.jpg"
    fx = FeatureExtractor.load(kaiming_tiny, batch_photos=2)
    out = list(fx.extract([photos[1], bad, photos[2], missing]))
    assert [r.error is None for r in out] == [True, False, True, False]
    assert "truncated" in out[1].error and str(bad) in out[1].error
    assert "not found" in out[3].error
    np.testing.assert_allclose(out[2].vector, fx.extract_one(photos[2]), atol=1e-6)


def test_settings_are_validated_and_round_trip():
    s = FeatureSettings(crops=10, metric="euclidean")
    assert FeatureSettings.from_json(s.to_json()) == s
    assert "ten crops" in s.describe() and "Euclidean" in s.describe()
    with pytest.raises(ValueError):
        FeatureSettings(crops=5)
    with pytest.raises(ValueError):
        FeatureSettings(metric="manhattan")
