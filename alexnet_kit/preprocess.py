"""From 256x256 photos to network input: mean subtraction and crops (§2, §4.1).

Photos arrive as uint8 (N, 256, 256, 3) arrays (see :mod:`alexnet_kit.images`).
The paper subtracts the training set's mean image and feeds 224x224 crops;
at test time it averages the softmax over ten crops: the four corners and the
centre, and their horizontal reflections.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .images import RESIZE_MODES, ImageSource, load_square

# ImageNet's per-channel RGB mean on a 0..255 scale, for a checkpoint that has
# no mean image of its own yet (an untrained one).
IMAGENET_RGB_MEAN = (123.68, 116.779, 103.939)


@dataclass
class Preprocess:
    """What a checkpoint says about its input: sizes and normalisation.

    ``mean`` is the per-pixel mean image (3, resize, resize) or a per-channel
    mean (3,), RGB, on the 0..255 scale; ``std`` divides after the mean is
    subtracted (1 in the paper, which feeds raw centred pixels). A source that
    scales to 0..1 first (torchvision) is the same arithmetic with its mean
    and std multiplied by 255. ``resize_mode``: see :data:`RESIZE_MODES`;
    :meth:`load` decodes a photo with both ``resize`` and ``resize_mode``.
    """

    resize: int = 256
    crop: int = 224
    mean: np.ndarray = None  # type: ignore[assignment]
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    resize_mode: str = "crop"

    def __post_init__(self):
        if self.resize_mode not in RESIZE_MODES:
            raise ValueError(f"resize mode must be one of {RESIZE_MODES}, got {self.resize_mode!r}")
        self.resize = int(self.resize)
        self.std = tuple(float(s) for s in self.std)
        if self.mean is None:
            self.mean = np.asarray(IMAGENET_RGB_MEAN, dtype=np.float32)
        self.mean = np.asarray(self.mean, dtype=np.float32)
        if self.mean.shape not in ((3,), (3, self.resize, self.resize)):
            raise ValueError(f"mean must have shape (3,) or (3, {self.resize}, {self.resize}), got {self.mean.shape}")
        if not 0 < self.crop <= self.resize:
            raise ValueError(f"crop {self.crop} must fit in resize {self.resize}")
        self._mean_t = torch.from_numpy(self.mean if self.mean.ndim == 3 else self.mean[:, None, None].copy())
        self._std_t = torch.tensor(self.std, dtype=torch.float32)[:, None, None]

    def load(self, src: ImageSource) -> np.ndarray:
        """A photo decoded as this model expects: uint8 (resize, resize, 3), ``resize_mode`` applied."""
        return load_square(src, self.resize, self.resize_mode)

    def normalise(self, photos: np.ndarray | torch.Tensor) -> torch.Tensor:
        """uint8 (N, R, R, 3) -> float32 (N, 3, R, R), mean subtracted, std divided."""
        x = torch.as_tensor(photos)
        if x.ndim == 3:
            x = x[None]
        x = x.permute(0, 3, 1, 2).float()
        x = x - self._mean_t.to(x.device)
        if any(s != 1.0 for s in self.std):
            x = x / self._std_t.to(x.device)
        return x

    def crop_offsets(self, crops: int) -> list[tuple[int, int]]:
        """(top, left) of the crops: 1 = centre; 10 = four corners, centre, each mirrored."""
        r, c = self.resize, self.crop
        far, mid = r - c, (r - c) // 2
        centre = (mid, mid)
        if crops == 1:
            return [centre]
        if crops == 10:
            return [(0, 0), (0, far), (far, 0), (far, far), centre]
        raise ValueError(f"crops must be 1 or 10, got {crops}")

    def crops(self, photos: np.ndarray | torch.Tensor, crops: int = 10, out: np.ndarray | None = None) -> torch.Tensor:
        """(N*crops, 3, C, C) network input, photo-major: photo i's crops are rows i*crops ...

        For ten crops the order within a photo is: top-left, top-right,
        bottom-left, bottom-right, centre, then the same five mirrored (§4.1).
        ``out``: an optional float32 buffer of at least N*crops*3*C*C values
        to write into (a server reuses it instead of faulting in fresh pages
        for every batch); the result is then a view of it.
        """
        c = self.crop
        offsets = self.crop_offsets(crops)
        if isinstance(photos, torch.Tensor):  # e.g. already on a GPU: stay in torch
            x = self.normalise(photos)
            views = [x[:, :, t : t + c, l : l + c] for t, l in offsets]
            if crops == 10:
                views += [v.flip(3) for v in views]
            return torch.stack(views, 1).reshape(-1, 3, c, c)
        # The same arithmetic in numpy: normalise the whole photo once into
        # planar float32 (as normalise() does), then each crop is a block
        # copy. Measured several times faster than the torch ops on a busy
        # 2-core CPU (no thread-pool wake-ups, no temporaries), which keeps
        # preprocessing far below the model's cost.
        x = np.asarray(photos)
        if x.ndim == 3:
            x = x[None]
        k = len(offsets)
        per_photo = 2 * k if crops == 10 else k
        mean = self.mean if self.mean.ndim == 3 else self.mean[:, None, None]
        planar = np.subtract(x.transpose(0, 3, 1, 2), mean, dtype=np.float32)
        if any(s != 1.0 for s in self.std):
            np.divide(planar, np.asarray(self.std, np.float32)[:, None, None], out=planar)
        shape = (len(x), per_photo, 3, c, c)
        if out is None:
            buf = np.empty(shape, np.float32)
        else:
            buf = np.asarray(out).reshape(-1)[: int(np.prod(shape))].reshape(shape)
        for j, (t, l) in enumerate(offsets):
            buf[:, j] = planar[:, :, t : t + c, l : l + c]
            if crops == 10:
                buf[:, j + k] = planar[:, :, t : t + c, l + c - 1 : (l - 1 if l > 0 else None) : -1]
        return torch.from_numpy(buf.reshape(-1, 3, c, c))


def caffe_mean_to_rgb(mean_bgr: np.ndarray) -> np.ndarray:
    """Caffe's ``ilsvrc_2012_mean.npy`` is BGR (3, 256, 256); we keep RGB."""
    mean_bgr = np.asarray(mean_bgr)
    if mean_bgr.ndim != 3 or mean_bgr.shape[0] != 3:
        raise ValueError(f"expected a (3, H, W) BGR mean image, got shape {mean_bgr.shape}")
    return np.ascontiguousarray(mean_bgr[::-1], dtype=np.float32)
