"""Ten crops (§4.1) are exactly the corners, centre and mirrors; averaging is the softmax mean."""
import numpy as np
import torch

from alexnet_kit.metrics import average_crops
from alexnet_kit.preprocess import Preprocess, caffe_mean_to_rgb

from helpers import shared


def photo_batch(n=2, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, 256, 256, 3), dtype=np.uint8)


def test_ten_crops_are_corners_centre_and_mirrors_pixel_for_pixel():
    pre = Preprocess(mean=np.zeros(3, np.float32))
    photos = photo_batch()
    x = pre.crops(photos, 10).numpy()
    assert x.shape == (20, 3, 224, 224)
    for i, photo in enumerate(photos):
        chw = photo.transpose(2, 0, 1).astype(np.float32)
        views = [chw[:, :224, :224], chw[:, :224, 32:], chw[:, 32:, :224], chw[:, 32:, 32:], chw[:, 16:240, 16:240]]
        views += [v[:, :, ::-1] for v in views]
        for j, v in enumerate(views):
            assert np.array_equal(x[i * 10 + j], v), (i, j)


def test_centre_crop_and_mean_image_subtraction():
    mean = np.random.default_rng(1).uniform(0, 255, (3, 256, 256)).astype(np.float32)
    pre = Preprocess(mean=mean)
    photos = photo_batch(1)
    x = pre.crops(photos, 1).numpy()[0]
    want = photos[0].transpose(2, 0, 1).astype(np.float32)[:, 16:240, 16:240] - mean[:, 16:240, 16:240]
    np.testing.assert_allclose(x, want, rtol=0, atol=1e-4)


def test_average_of_crops_equals_manual_softmax_mean():
    torch.manual_seed(0)
    logits = torch.randn(30, 7)
    probs = average_crops(logits, 10)
    for i in range(3):
        manual = torch.stack([torch.softmax(logits[i * 10 + j], 0) for j in range(10)]).mean(0)
        torch.testing.assert_close(probs[i], manual)
    torch.testing.assert_close(probs.sum(1), torch.ones(3))


def test_caffe_mean_is_converted_from_bgr():
    mean_bgr = np.load(shared("imagenet", "ilsvrc_2012_mean.npy"))
    rgb = caffe_mean_to_rgb(mean_bgr)
    assert rgb.shape == (3, 256, 256)
    np.testing.assert_array_equal(rgb[0], mean_bgr[2].astype(np.float32))
    # ImageNet is redder than it is blue on average
    assert rgb[0].mean() > rgb[2].mean()
    Preprocess(mean=rgb)  # accepted as a per-pixel mean image
