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


def test_random_resized_crops_stay_in_range_and_resize_their_box():
    from alexnet_kit.train.augment import Draw, pack_draw

    d = draw(2000, 256, 224, np.random.default_rng(0), 0.1, scale=0.35)
    area = d.heights * d.widths / 256**2
    assert 0.34 < area.min() and area.max() <= 1.0 and area.std() > 0.1  # 35-100% of the photo
    aspect = d.widths / d.heights
    assert 0.74 <= aspect.min() and aspect.max() <= 1.34
    assert (d.tops >= 0).all() and (d.tops + d.heights <= 256).all() and (d.lefts + d.widths <= 256).all()
    assert pack_draw(d).shape == (2000, 8) and pack_draw(draw(4, 256, 224, np.random.default_rng(0))).shape == (4, 6)
    photos, fin, p = augment_case()
    # a 224x224 box is §4.1's patch: resizing it changes nothing
    same = Draw(p.tops, p.lefts, p.flips, p.alphas, np.full(16, 224), np.full(16, 224))
    torch.testing.assert_close(fin.from_photos(list(photos), same), fin.from_photos(list(photos), p), atol=0, rtol=0)
    # the whole photo: torch's bilinear resize of the centred photo, mirrored where drawn, plus the noise
    whole = Draw(np.zeros(16, np.int64), np.zeros(16, np.int64), p.flips, p.alphas, np.full(16, 256), np.full(16, 256))
    ref = torch.nn.functional.interpolate((torch.from_numpy(photos).float() - fin.mean_hwc).permute(0, 3, 1, 2), size=224,
                                          mode="bilinear", align_corners=False)
    ref = torch.where(torch.from_numpy(p.flips)[:, None, None, None], ref.flip(3), ref)
    ref = (ref + torch.from_numpy(fin.offsets(p))[:, :, None, None]) * fin.inv_std[None, :, None, None]
    torch.testing.assert_close(fin(torch.from_numpy(photos), whole), ref, atol=1e-3, rtol=1e-5)
    # the CPU workers' path (torch's resize, box by box) and the device path (one batched gather) compute the same crops
    boxes = draw(16, 256, 224, np.random.default_rng(9), 0.1, scale=0.35)
    assert boxes.flips.any() and not boxes.flips.all()
    torch.testing.assert_close(fin.from_photos(list(photos), boxes), fin(torch.from_numpy(photos), boxes), atol=2e-3, rtol=1e-5)
