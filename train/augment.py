"""§4.1 data augmentation, as batched tensor operations (CPU workers or GPU).

The paper trains on random 224x224 patches of the 256x256 photos and their
horizontal reflections, with the training set's mean image subtracted (§2),
and adds PCA colour noise: to every pixel of an image the same RGB offset
``[p1 p2 p3] [a1 l1, a2 l2, a3 l3]^T``, a_i ~ N(0, 0.1), one draw per image
per presentation. Validation uses the centre patch, unflipped, no noise.

A recipe may replace §4.1's fixed-size patches by random-resized crops
(``crop = "rrc"``, not in the paper): a box of a random area (``crop_scale``
to all of the photo) and aspect ratio (3/4 to 4/3), resized to 224x224
bilinearly (:func:`rrc_boxes`, :meth:`Finisher.resized`); flips, centring
and colour noise stay the paper's.

The random numbers are drawn up front by :func:`draw` from a generator seeded
with (seed, epoch, batch), so a batch is the same whichever process or
device augments it, and whenever (exact resume). Where the work runs:

* CPU training: the loader's worker processes run :meth:`Finisher.from_photos`,
  crop, flip, centring and noise in one pass per channel straight from the
  memmap rows (~10x the per-file PIL pipeline per core).
* CUDA training: the workers only gather the whole uint8 photos; calling the
  :class:`Finisher` on the GPU (``Finisher(photos, pack_draw(d))``) crops,
  flips, centres and colours the batch in one batched gather there.

:func:`crop_flip` is the plain reference: the tests check both paths against
the finisher applied to its patches.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class Draw:
    """The random choices for one batch (all numpy, picklable)."""

    tops: np.ndarray  # int64 (B,)
    lefts: np.ndarray  # int64 (B,)
    flips: np.ndarray  # bool (B,)
    alphas: np.ndarray  # float32 (B, 3)
    heights: np.ndarray | None = None  # int64 (B,): random-resized crops' boxes; None: crop x crop patches (§4.1)
    widths: np.ndarray | None = None

    def take(self, idx) -> "Draw":
        """The draws of the images ``idx`` (a slice or an index array), in that order."""
        pick = lambda a: None if a is None else a[idx]  # noqa: E731
        return Draw(self.tops[idx], self.lefts[idx], self.flips[idx], self.alphas[idx], pick(self.heights), pick(self.widths))


def draw(n: int, size: int, crop: int, rng: np.random.Generator | None, pca_std: float = 0.1,
         scale: float | None = None) -> Draw:
    """Random patches, flips and PCA coefficients; ``rng=None`` = validation (centre, nothing random).
    ``scale``: random-resized crops of ``scale`` to all of the photo's area instead of §4.1's patches."""
    if rng is None:
        mid = (size - crop) // 2
        return Draw(np.full(n, mid, np.int64), np.full(n, mid, np.int64), np.zeros(n, bool), np.zeros((n, 3), np.float32))
    if scale is not None:
        heights, widths, tops, lefts = rrc_boxes(rng, n, size, scale)
    else:  # §4.1: a random crop x crop patch of the size x size photo
        span = size - crop + 1
        heights = widths = None
        tops = rng.integers(0, span, n)
        lefts = rng.integers(0, span, n)
    flips = rng.random(n) < 0.5
    alphas = (rng.standard_normal((n, 3)) * pca_std).astype(np.float32)  # §4.1: a_i ~ N(0, 0.1)
    return Draw(tops, lefts, flips, alphas, heights, widths)


def rrc_boxes(rng: np.random.Generator, n: int, size: int, scale: float, ratio=(3 / 4, 4 / 3), tries: int = 10):
    """(heights, widths, tops, lefts) of random-resized crops (not in the paper; Inception's and
    torchvision's RandomResizedCrop): an area of ``scale``..1 of the photo and an aspect ratio of
    ``ratio`` (log-uniform), redrawn up to ``tries`` times until the box fits, else the whole photo."""
    h = np.full(n, size, np.int64)
    w = np.full(n, size, np.int64)
    done = np.zeros(n, bool)
    for _ in range(tries):
        area = size * size * rng.uniform(scale, 1.0, n)
        aspect = np.exp(rng.uniform(np.log(ratio[0]), np.log(ratio[1]), n))
        ww = np.round(np.sqrt(area * aspect)).astype(np.int64)
        hh = np.round(np.sqrt(area / aspect)).astype(np.int64)
        ok = ~done & (ww >= 1) & (hh >= 1) & (ww <= size) & (hh <= size)
        h[ok], w[ok] = hh[ok], ww[ok]
        done |= ok
    tops = rng.integers(0, size - h + 1)
    lefts = rng.integers(0, size - w + 1)
    return h, w, tops, lefts


def _axis(start: torch.Tensor, length: torch.Tensor, out: int):
    """Bilinear sample positions of ``out`` pixels over [start, start + length) per image (half-pixel
    centres, clamped inside the box, as torch's bilinear resize of the box): (i0, i1, fraction)."""
    pos = (torch.arange(out, device=start.device, dtype=torch.float32) + 0.5)[None] * (length.float() / out)[:, None] - 0.5
    last = (length - 1).float()[:, None]
    pos = torch.minimum(pos.clamp_min(0.0), last)
    i0 = pos.floor()
    frac = pos - i0
    i0 = i0.long()
    i1 = torch.minimum(i0 + 1, (length - 1)[:, None])
    return i0 + start[:, None], i1 + start[:, None], frac


def crop_flip(images: np.ndarray, d: Draw, crop: int) -> torch.Tensor:
    """uint8 (B, S, S, 3) -> uint8 (B, crop, crop, 3) patches, mirrored where ``d.flips``.

    Not on a training path: the tests' reference for the crop and flip that
    :meth:`Finisher.from_photos` and the device path (:meth:`Finisher.__call__`
    on whole photos) each do inside their own pass."""
    out = np.empty((len(images), crop, crop, 3), np.uint8)
    for i, (t, l, f) in enumerate(zip(d.tops, d.lefts, d.flips)):
        patch = images[i, t:t + crop, l:l + crop]
        out[i] = patch[:, ::-1] if f else patch
    return torch.from_numpy(out)


class Finisher:
    """uint8 patches -> float (B, 3, crop, crop): minus the mean image's same patch, plus PCA noise.

    The mean image is subtracted from the 256x256 photo before cropping in
    the paper; subtracting the same (mirrored) patch of the mean from the
    patch is the same thing and touches 23% fewer pixels.
    """

    def __init__(self, mean_chw: np.ndarray, eigvals: np.ndarray, eigvecs: np.ndarray, crop: int, device: str | torch.device = "cpu",
                 std: tuple[float, float, float] | None = None):
        self.device = torch.device(device)
        self.crop = crop
        self._mean_np = None
        # the paper feeds centred raw pixels (std None); a recipe may divide by the
        # per-channel std (recorded in the checkpoint's Preprocess, so serving matches)
        self.inv_std = None if std is None else torch.tensor([1.0 / s for s in std], dtype=torch.float32, device=self.device)
        self.mean_hwc = torch.as_tensor(np.ascontiguousarray(np.asarray(mean_chw, np.float32).transpose(1, 2, 0)), device=self.device)
        # §4.1 offset P (alpha * lambda). The formula is not scale-free: like most
        # reproductions (fb.resnet.torch's eigval 0.2175, 0.0188, 0.0045) we read
        # lambda as the covariance eigenvalues of pixels on the 0..1 scale. Our
        # eigenvalues are on the stored 0..255 scale, so the offset in 0..255
        # units is 255 * P (alpha * lambda / 255^2) = P (alpha * lambda) / 255:
        # a few grey levels, as the paper intends ("intensity and colour of
        # the illumination"), not hundreds.
        lam01 = np.asarray(eigvals, np.float32) / 255.0
        self.pl = torch.as_tensor(np.asarray(eigvecs, np.float32) * lam01[None, :], device=self.device)

    def _means(self) -> tuple[np.ndarray, np.ndarray]:
        """The mean image (3, S, S) as numpy, and mirrored, made once per process."""
        if self._mean_np is None:
            mean = self.mean_hwc.cpu().numpy().transpose(2, 0, 1)
            self._mean_np = (np.ascontiguousarray(mean), np.ascontiguousarray(mean[:, :, ::-1]))
        return self._mean_np

    def offsets(self, d: Draw) -> np.ndarray:
        """§4.1 PCA colour noise: one RGB offset per image, (B, 3)."""
        return np.asarray(d.alphas, np.float32) @ self.pl.cpu().numpy().T

    def from_photos(self, photos, d: Draw) -> torch.Tensor:
        """CPU fast path: whole uint8 photos (any indexable of (S, S, 3) rows, e.g. memmap views)
        -> float (B, 3, crop, crop), cropping, mirroring, centring and colouring in one
        pass per channel straight into the output (no gathered intermediate copies).
        Computes exactly what ``self(crop_flip(...), d)`` computes."""
        if d.heights is not None:  # random-resized crops
            return self._resized_on_cpu(photos, d)
        c = self.crop
        mean, mean_flipped = self._means()
        size = mean.shape[2]
        off = self.offsets(d)
        out = np.empty((len(d.tops), 3, c, c), np.float32)
        inv = None if self.inv_std is None else self.inv_std.cpu().numpy()
        for i, (t, l, f) in enumerate(zip(d.tops, d.lefts, d.flips)):
            p = photos[i][t:t + c, l:l + c]
            if f:  # the mirrored patch's mean is the mirrored mean's patch at the mirrored column
                p, m = p[:, ::-1], mean_flipped[:, t:t + c, size - l - c:size - l]
            else:
                m = mean[:, t:t + c, l:l + c]
            for ch in range(3):
                o = out[i, ch]
                o[...] = p[:, :, ch]  # same-type in-place ops: numpy's fastest loops (measured)
                o -= m[ch]
                o += off[i, ch]
                if inv is not None:
                    o *= inv[ch]
        return torch.from_numpy(out)

    def __call__(self, photos: torch.Tensor, d: "Draw | torch.Tensor", channels_last: bool = False) -> torch.Tensor:
        """uint8 (B, S, S, 3) whole photos (or (B, crop, crop, 3) patches already cut) ->
        float (B, 3, crop, crop): crop, mirror, centre, colour noise and std in one batched
        pass on this finisher's device. ``d``: a :class:`Draw` or :func:`pack_draw`'s tensor
        (one pinned copy to the device instead of four pageable ones)."""
        c = self.crop
        dev = self.device
        p = pack_draw(d) if isinstance(d, Draw) else d
        if p.shape[1] == 8:  # random-resized crops (the draw's shape says so: no device sync)
            return self.resized(photos, p, channels_last)
        x = photos.to(dev, non_blocking=True)
        p = p.to(dev, non_blocking=True)
        tops, lefts, flips, alphas = p[:, 0].long(), p[:, 1].long(), p[:, 2] > 0.5, p[:, 3:6]
        ar = torch.arange(c, device=dev)
        rows = tops[:, None] + ar  # (B, c)
        cols = torch.where(flips[:, None], lefts[:, None] + (c - 1 - ar), lefts[:, None] + ar)
        mean = self.mean_hwc[rows[:, :, None], cols[:, None, :]]  # (B, c, c, 3), gathered like the patch
        if x.shape[1] != c or x.shape[2] != c:  # whole photos: the crop and the flip are this gather
            b = torch.arange(len(x), device=dev)[:, None, None]
            x = x[b, rows[:, :, None], cols[:, None, :]]
        offset = alphas @ self.pl.T  # §4.1 PCA colour noise, (B, 3)
        x = x.float().sub_(mean).add_(offset[:, None, None, :])
        if self.inv_std is not None:
            x = x.mul_(self.inv_std)
        x = x.permute(0, 3, 1, 2)  # NCHW view of NHWC memory: channels_last for free
        return x if channels_last else x.contiguous()


    def _resized_on_cpu(self, photos, d: Draw) -> torch.Tensor:
        """:meth:`resized` in a CPU worker: each centred box through torch's bilinear resize (the
        same sampling as :meth:`resized`'s gather, about 30x faster on one core than the gather)."""
        import torch.nn.functional as F

        c = self.crop
        mean = self._means()[0]
        off = self.offsets(d)
        out = torch.empty((len(d.tops), 3, c, c), dtype=torch.float32)
        for i, (t, l, h, w, f) in enumerate(zip(d.tops, d.lefts, d.heights, d.widths, d.flips)):
            box = torch.from_numpy(np.ascontiguousarray(photos[i][t:t + h, l:l + w].transpose(2, 0, 1))).float()
            box -= torch.from_numpy(mean[:, t:t + h, l:l + w])
            img = F.interpolate(box[None], size=(c, c), mode="bilinear", align_corners=False, antialias=False)[0]
            out[i] = img.flip(2) if f else img
        out += torch.from_numpy(off)[:, :, None, None]
        if self.inv_std is not None:
            out *= self.inv_std[None, :, None, None]
        return out

    def resized(self, photos: torch.Tensor, p: torch.Tensor, channels_last: bool = False) -> torch.Tensor:
        """Random-resized crops (not in the paper): whole uint8 photos (B, S, S, 3) and a packed
        draw with boxes (B, 8) -> float (B, 3, crop, crop): each box resized bilinearly, mirrored,
        minus the mean image resized alike (the same as resizing the centred photo: it is linear),
        plus the §4.1 colour noise. One batched gather on any device: the CPU workers and the GPU
        compute the same thing."""
        dev, c = self.device, self.crop
        x, p = photos.to(dev, non_blocking=True), p.to(dev, non_blocking=True)
        tops, lefts, flips, alphas, hs, ws = p[:, 0].long(), p[:, 1].long(), p[:, 2] > 0.5, p[:, 3:6], p[:, 6].long(), p[:, 7].long()
        y0, y1, fy = _axis(tops, hs, c)
        x0, x1, fx = _axis(lefts, ws, c)
        f = flips[:, None]  # mirrored: output column j is the resized box's column c - 1 - j
        x0, x1, fx = torch.where(f, x0.flip(1), x0), torch.where(f, x1.flip(1), x1), torch.where(f, fx.flip(1), fx)
        b = torch.arange(len(x), device=dev)[:, None, None]
        wy, wx = fy[:, :, None, None], fx[:, None, :, None]

        def sample(img, batched: bool) -> torch.Tensor:
            def at(r, q):
                return (img[b, r[:, :, None], q[:, None, :]] if batched else img[r[:, :, None], q[:, None, :]]).float()

            return (at(y0, x0) * (1 - wx) + at(y0, x1) * wx) * (1 - wy) + (at(y1, x0) * (1 - wx) + at(y1, x1) * wx) * wy

        out = sample(x, True).sub_(sample(self.mean_hwc, False)).add_((alphas @ self.pl.T)[:, None, None, :])
        if self.inv_std is not None:
            out = out.mul_(self.inv_std)
        out = out.permute(0, 3, 1, 2)
        return out if channels_last else out.contiguous()


def pack_draw(d: Draw) -> torch.Tensor:
    """A draw as one float32 tensor: (B, 6) top, left, flip, a1, a2, a3 (offsets < 2^24: exact);
    random-resized crops add their boxes' height and width: (B, 8)."""
    out = np.empty((len(d.tops), 6 if d.heights is None else 8), np.float32)
    out[:, 0], out[:, 1], out[:, 2], out[:, 3:6] = d.tops, d.lefts, d.flips, d.alphas
    if d.heights is not None:
        out[:, 6], out[:, 7] = d.heights, d.widths
    return torch.from_numpy(out)
