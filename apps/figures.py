"""Pictures of what the network sees and learned: Figure 3's kernels and the ten crops.

Plain numpy and Pillow (no Gradio), so the demo, a notebook or a test can
use them alike. Every function returns a uint8 (H, W, 3) RGB array.
"""
from __future__ import annotations

import numpy as np
from PIL import Image

from alexnet_kit.preprocess import Preprocess

BACKGROUND = 255  # white gaps between tiles, as in the paper's figure


def normalise_kernel(kernel: np.ndarray) -> np.ndarray:
    """One (3, h, w) kernel -> uint8 (h, w, 3), min-max stretched on its own.

    Each kernel gets its own range (Figure 3 shows shapes and colours, not
    magnitudes); a constant kernel becomes mid grey instead of dividing by 0.
    """
    k = np.asarray(kernel, dtype=np.float64).transpose(1, 2, 0)
    lo, hi = k.min(), k.max()
    if not np.isfinite(lo) or not np.isfinite(hi) or hi - lo < 1e-12:
        return np.full(k.shape, 128, np.uint8)
    return np.round((k - lo) / (hi - lo) * 255).astype(np.uint8)


def tile(images: list[np.ndarray], columns: int, gap: int) -> np.ndarray:
    """Equal-sized HWC uint8 images in rows of ``columns``, ``gap`` pixels apart."""
    h, w, c = images[0].shape
    rows = -(-len(images) // columns)
    out = np.full((rows * h + (rows - 1) * gap, columns * w + (columns - 1) * gap, c), BACKGROUND, np.uint8)
    for i, im in enumerate(images):
        r, q = divmod(i, columns)
        out[r * (h + gap) : r * (h + gap) + h, q * (w + gap) : q * (w + gap) + w] = im
    return out


def kernel_grid(weight, towers: int = 2, columns: int = 16, scale: int = 4, gap: int = 2, tower_gap: int = 12) -> np.ndarray:
    """Figure 3: every first-layer kernel as one image, one block per tower.

    ``weight`` is conv1's (K, 3, h, w) weight (a torch tensor or an array).
    §3.2/Figure 3: in the two-GPU network kernels 0..K/2-1 live on GPU 1 and
    the rest on GPU 2 (conv2 is grouped, so each half feeds only its own
    tower); the paper shows GPU 1's 48 above GPU 2's 48, and so does this.
    Each kernel is min-max normalised on its own and enlarged ``scale``
    times with nearest-neighbour so the 11x11 pixels stay sharp.
    """
    w = weight.detach().cpu().float().numpy() if hasattr(weight, "detach") else np.asarray(weight, np.float32)
    if w.ndim != 4 or w.shape[1] != 3:
        raise ValueError(f"expected a (K, 3, h, w) first-layer weight, got shape {w.shape}")
    k = w.shape[0]
    towers = max(1, towers)
    if k % towers:
        raise ValueError(f"{k} kernels do not split into {towers} towers")
    per = k // towers
    columns = max(1, min(columns, per))
    tiles = [normalise_kernel(w[i]).repeat(scale, 0).repeat(scale, 1) for i in range(k)]
    blocks = [tile(tiles[t * per : (t + 1) * per], columns, gap) for t in range(towers)]
    sep = np.full((tower_gap, blocks[0].shape[1], 3), BACKGROUND, np.uint8)
    parts: list[np.ndarray] = []
    for b in blocks:
        parts += [sep, b] if parts else [b]
    return np.concatenate(parts, 0)


def ten_crops(photo: np.ndarray, preprocess: Preprocess) -> list[np.ndarray]:
    """§4.1's test-time crops of one uint8 (R, R, 3) photo, as pixels.

    Same offsets and order as :meth:`Preprocess.crops` (what the network
    is fed, before mean subtraction): top-left, top-right, bottom-left,
    bottom-right, centre, then each mirrored.
    """
    c = preprocess.crop
    views = [photo[t : t + c, l : l + c] for t, l in preprocess.crop_offsets(10)]
    return views + [v[:, ::-1] for v in views]


def crops_strip(photo: np.ndarray, preprocess: Preprocess, size: int = 112, gap: int = 4) -> np.ndarray:
    """The ten crops as one picture: the five crops above, their mirrors below."""
    thumbs = [np.asarray(Image.fromarray(np.ascontiguousarray(v)).resize((size, size), Image.Resampling.BILINEAR)) for v in ten_crops(photo, preprocess)]
    return tile(thumbs, 5, gap)
