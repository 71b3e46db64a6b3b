"""Contact sheets of units: each unit's top photos, cut to its receptive field (Zeiler & Fergus 2013, Figure 2).

One unit: its top-k patches in a grid with each photo's activation under
it, and optionally beside each patch its deconvnet projection (the unit's
activation at that place projected back to pixels). A whole layer: a tile
per unit, each a small grid of its top patches, numbered.
"""
from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

from ..meta import ModelMeta
from .drawing import _font
from .methods import quiet_captum
from .units import TopPhoto


def crop_of(path: str, meta: ModelMeta) -> np.ndarray:
    """The central crop the network saw, uint8 (C, C, 3)."""
    p = meta.preprocess
    (top, left), = p.crop_offsets(1)
    return p.load(path)[top : top + p.crop, left : left + p.crop]


def fit(img: np.ndarray, cell: int) -> Image.Image:
    """``img`` scaled to fit a ``cell``-square, centred on grey (a patch cut by the crop's border is not square)."""
    pic = Image.fromarray(np.ascontiguousarray(img))
    scale = cell / max(pic.size)
    pic = pic.resize((max(1, round(pic.size[0] * scale)), max(1, round(pic.size[1] * scale))), Image.BILINEAR)
    out = Image.new("RGB", (cell, cell), (128, 128, 128))
    out.paste(pic, ((cell - pic.size[0]) // 2, (cell - pic.size[1]) // 2))
    return out


def patch(top: TopPhoto, meta: ModelMeta) -> np.ndarray:
    left, t, right, bottom = top.box
    return crop_of(top.path, meta)[t:bottom, left:right]


def unit_sheet(tops: list[TopPhoto], meta: ModelMeta, title: str, cell: int = 112,
               projections: list[np.ndarray] | None = None) -> Image.Image:
    """One unit's top patches, ``cols`` to a row (with their deconvnet projections beside them when given)."""
    per = 2 if projections else 1
    cols = max(1, min(len(tops), 3 if per == 2 else math.ceil(math.sqrt(len(tops)))))
    rows = max(1, math.ceil(len(tops) / cols))
    label, head, gap = 18, 28, 6
    w = cols * (per * cell + (per - 1) * 2) + (cols + 1) * gap
    sheet = Image.new("RGB", (w, head + rows * (cell + label + gap) + gap), "white")
    draw = ImageDraw.Draw(sheet)
    draw.text((gap, 6), title, fill="black", font=_font(15))
    for i, t in enumerate(tops):
        x = gap + (i % cols) * (per * cell + (per - 1) * 2 + gap)
        y = head + (i // cols) * (cell + label + gap)
        sheet.paste(fit(patch(t, meta), cell), (x, y))
        if projections:
            sheet.paste(fit(projections[i], cell), (x + cell + 2, y))
        draw.text((x, y + cell + 2), f"{t.activation:.3g}", fill="black", font=_font(12))
    return sheet


def layer_sheet(tops: dict[int, list[TopPhoto]], meta: ModelMeta, title: str, cell: int = 30) -> Image.Image:
    """A tile per unit: its top patches in a small grid, the unit's number above."""
    k = max((len(v) for v in tops.values()), default=1)
    inner = max(1, math.ceil(math.sqrt(k)))
    tile = inner * cell
    cols = max(1, math.ceil(math.sqrt(len(tops))))
    rows = max(1, math.ceil(len(tops) / cols))
    label, head, gap = 14, 28, 6
    sheet = Image.new("RGB", (cols * (tile + gap) + gap, head + rows * (tile + label + gap)), "white")
    draw = ImageDraw.Draw(sheet)
    draw.text((gap, 6), title, fill="black", font=_font(15))
    cache: dict[str, np.ndarray] = {}
    for n, (unit, photos) in enumerate(sorted(tops.items())):
        x0 = gap + (n % cols) * (tile + gap)
        y0 = head + (n // cols) * (tile + label + gap)
        draw.text((x0, y0), str(unit), fill="black", font=_font(11))
        for j, t in enumerate(photos):
            if t.path not in cache:
                cache[t.path] = crop_of(t.path, meta)
            left, top, right, bottom = t.box
            cell_img = fit(cache[t.path][top:bottom, left:right], cell)
            sheet.paste(cell_img, (x0 + (j % inner) * cell, y0 + label + (j // inner) * cell))
    return sheet


def deconv_projection(model, layer: str, top: TopPhoto, unit: int, meta: ModelMeta) -> np.ndarray:
    """The unit's activation at ``top``'s place projected back to the crop's pixels by a deconvnet (Captum's
    NeuronDeconvolution; ``model`` from :func:`~alexnet_kit.explain.methods.gradient_model`), cut to the
    receptive field and scaled to 0..255 for display (grey = no signal)."""
    from captum.attr import NeuronDeconvolution  # defers captum, an optional dependency

    module = dict(model.stages())[layer]
    x = meta.preprocess.crops(meta.preprocess.load(top.path)[None], 1)
    with quiet_captum():
        attr = NeuronDeconvolution(model, module).attribute(x, neuron_selector=(unit, *top.location))[0]
    left, t, right, bottom = top.box
    a = attr[:, t:bottom, left:right].permute(1, 2, 0).detach().numpy()
    a = a - a.mean()
    spread = float(np.abs(a).max()) or 1.0
    return np.clip(128 + 127 * a / spread, 0, 255).astype(np.uint8)
