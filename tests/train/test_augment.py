"""§4.1 augmentation: random crops, flips and PCA colour noise; the centre view equals serving."""
from __future__ import annotations

import numpy as np
import torch

from alexnet_kit.preprocess import Preprocess
from alexnet_kit.train.augment import Finisher, crop_flip, draw
from helpers import augment_case


def test_centre_view_equals_the_runtime_preprocessing():
    rng = np.random.default_rng(0)
    photos = rng.integers(0, 256, (3, 256, 256, 3), dtype=np.uint8)
    mean = rng.uniform(0, 255, (3, 256, 256)).astype(np.float32)
    d = draw(3, 256, 224, None)
    x = Finisher(mean, np.ones(3), np.eye(3), 224)(crop_flip(photos, d, 224), d)
    # what classify feeds the network for one crop: training and serving agree
    np.testing.assert_allclose(x.numpy(), Preprocess(mean=mean).crops(photos, 1).numpy(), atol=1e-4)


def test_random_crops_flips_and_pca_noise():
    rng = np.random.default_rng(1)
    photos = rng.integers(0, 256, (64, 256, 256, 3), dtype=np.uint8)
    mean = np.zeros((3, 256, 256), np.float32)
    vecs = np.linalg.qr(rng.standard_normal((3, 3)))[0].astype(np.float32)
    vals = np.array([300.0, 30.0, 3.0], np.float32)
    d = draw(64, 256, 224, np.random.default_rng([7, 0, 0]))
    assert 0 <= d.tops.min() and d.tops.max() <= 32 and 10 < d.flips.sum() < 54
    x = Finisher(mean, vals, vecs, 224)(crop_flip(photos, d, 224), d).numpy()
    for i in (0, 1, 2):
        patch = photos[i, d.tops[i]:d.tops[i] + 224, d.lefts[i]:d.lefts[i] + 224].astype(np.float32)
        if d.flips[i]:
            patch = patch[:, ::-1]
        offset = vecs @ (d.alphas[i] * vals / 255.0)  # §4.1 P (alpha * lambda), lambda on the 0..1 scale
        np.testing.assert_allclose(x[i], (patch + offset).transpose(2, 0, 1), atol=1e-3)
    assert abs(float(d.alphas.std()) - 0.1) < 0.03  # a_i ~ N(0, 0.1)
    again = draw(64, 256, 224, np.random.default_rng([7, 0, 0]))
    assert (again.tops == d.tops).all() and (again.alphas == d.alphas).all()


def test_cpu_fast_path_equals_the_batched_device_path():
    photos, fin, d = augment_case()
    assert d.flips.any() and not d.flips.all()
    fast = fin.from_photos([p for p in photos], d)
    batched = fin(crop_flip(photos, d, 224), d)
    torch.testing.assert_close(fast, batched, atol=1e-4, rtol=1e-5)
