"""Heat maps as pictures: a colour scale, an overlay on the crop with its caption, and the files.

Per explanation three files share one stem: ``STEM.png`` (the crop and the
crop under its heat map, side by side, with the caption), ``STEM.npy`` (the
raw map, float32 at the crop's resolution) and ``STEM.json`` (the caption's
facts, the method's settings and the crop's geometry in the photo), so
anyone can redraw the map.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..fsutil import atomic_path

# A perceptually ordered dark-to-bright scale (black, purple, red, orange, pale yellow), like "inferno".
_STOPS = np.array([[0, 0, 4], [40, 11, 84], [101, 21, 110], [159, 42, 99], [212, 72, 66],
                   [245, 125, 21], [250, 193, 39], [252, 255, 164]], np.float32)
SCALE = 2  # the picture's pixels per crop pixel


def colour(heat: np.ndarray) -> np.ndarray:
    """(H, W) map -> (H, W, 3) uint8: its positive part scaled to its 99th percentile (above: the brightest
    colour; negative and zero: black). The pixel-level methods put much of a map's mass in a few pixels,
    which a scale to the maximum would leave as a dark picture with a few bright dots."""
    h = np.clip(np.nan_to_num(heat.astype(np.float32)), 0, None)
    positive = h[h > 0]
    top = float(np.percentile(positive, 99)) if positive.size else 0.0
    t = np.minimum(h / top, 1.0) if top > 0 else h
    pos = t * (len(_STOPS) - 1)
    i = np.clip(pos.astype(int), 0, len(_STOPS) - 2)
    f = (pos - i)[..., None]
    return (_STOPS[i] * (1 - f) + _STOPS[i + 1] * f).round().astype(np.uint8)


def overlay(crop: np.ndarray, heat: np.ndarray, caption: str, alpha: float = 0.55) -> Image.Image:
    """The crop, and the crop blended with its coloured map, side by side over a caption line."""
    size = (crop.shape[1] * SCALE, crop.shape[0] * SCALE)
    photo = Image.fromarray(crop).resize(size, Image.BILINEAR)
    heat_img = Image.fromarray(colour(heat)).resize(size, Image.BILINEAR)
    blended = Image.blend(photo, heat_img, alpha)
    bar = 30
    sheet = Image.new("RGB", (2 * size[0] + 8, size[1] + bar), "white")
    sheet.paste(photo, (0, 0))
    sheet.paste(blended, (size[0] + 8, 0))
    ImageDraw.Draw(sheet).text((6, size[1] + 6), caption, fill="black", font=_font(16))
    return sheet


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: one size only
        return ImageFont.load_default()


def safe_stem(text: str) -> str:
    """A file-name part from a class or photo name: letters, digits, '-', '_' and '.'."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._")[:60] or "x"


def write(explanation, out: Path, stem: str) -> Path:
    """Write STEM.png, STEM.npy and STEM.json into ``out``; returns the PNG's path."""
    out.mkdir(parents=True, exist_ok=True)
    e = explanation
    png = out / f"{stem}.png"
    with atomic_path(out / f"{stem}.npy") as tmp:
        with open(tmp, "wb") as f:
            np.save(f, e.heat.astype(np.float32))
    facts = {"photo": e.photo, "method": e.method, "explains": e.kind, "label": e.label, "class_index": e.class_index,
             ("probability" if e.kind == "class" else "cosine"): e.score, "map": f"{stem}.npy",
             "map_shape": list(e.heat.shape), "map_min": float(e.heat.min()), "map_max": float(e.heat.max()),
             "method_settings": e.params, "geometry": e.geometry}
    with atomic_path(out / f"{stem}.json") as tmp:
        tmp.write_text(json.dumps(facts, indent=2) + "\n")
    with atomic_path(png) as tmp:
        overlay(e.crop, e.heat, e.caption()).save(tmp, format="PNG")
    return png
