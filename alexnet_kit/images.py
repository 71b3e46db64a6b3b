"""Read any real-world photo as 8-bit RGB, or fail with one clear line.

Handles grayscale, palette, alpha (composited on white), CMYK, 16-bit and
float images, EXIF rotation, multi-frame files (first frame) and tiny or
huge photos. Missing, empty, truncated and non-image files raise
:class:`~alexnet_kit.errors.ImageError` naming the file and the problem.
"""
from __future__ import annotations

import io
import os
import warnings
from pathlib import Path
from typing import Iterable, Union

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from .errors import ImageError, existing_file
from .imagefiles import IMAGE_SUFFIXES, is_image_path  # noqa: F401  (the suffix rule, also imported from here)

# How a photo becomes resize x resize before cropping:
#   "crop": short side to `resize`, then the central square (§2);
#   "warp": the whole photo squeezed to resize x resize, aspect ratio lost
#           (Caffe's convert_imageset, which made bvlc_alexnet's training data).
RESIZE_MODES = ("crop", "warp")

# Truncated files are errors, never silently grey-filled.
ImageFile.LOAD_TRUNCATED_IMAGES = False

ImageSource = Union[str, os.PathLike, bytes, Image.Image]

def find_images(paths: Iterable[str | os.PathLike]) -> list[str]:
    """Folders become the image files inside them (recursively, sorted); other paths stay as given."""
    out: list[str] = []
    for p in paths:
        path = Path(p)
        if path.is_dir():
            out.extend(str(f) for f in sorted(path.rglob("*")) if f.is_file() and is_image_path(f))
        else:
            out.append(os.fspath(p))
    return out


def empty_folder_problem(folder: Path) -> str:
    """One line saying why a folder the user named holds no photo."""
    files = [f for f in folder.rglob("*") if f.is_file()]
    if not files:
        return f"{folder}: empty folder, no photos in it"
    return (f"{folder}: no photos in this folder ({len(files)} file{'s' if len(files) != 1 else ''}, none named "
            f"like an image: {', '.join(sorted(IMAGE_SUFFIXES)[:6])}, ...)")


def not_an_image(path: Path) -> str | None:
    """One line when a file is not an image at all (its header names no format Pillow reads), else None."""
    try:
        with Image.open(path):
            return None
    except (OSError, UnidentifiedImageError, ValueError):
        return f"{path}: not a photo (no image format Pillow reads)"


def source_name(src: ImageSource) -> str:
    if isinstance(src, (str, os.PathLike)):
        return os.fspath(src)
    if isinstance(src, bytes):
        return "<bytes>"
    return getattr(src, "filename", None) or "<image>"


def open_image(src: ImageSource, min_size: int | None = None) -> Image.Image:
    """Open ``src`` and return a loaded 8-bit RGB image.

    ``min_size``: for JPEGs, let the decoder down-scale by 1/2, 1/4 or 1/8
    (DCT scaling) as long as both sides stay >= ``min_size``; much cheaper
    than decoding the full photo and resizing it afterwards.
    """
    name = source_name(src)
    if isinstance(src, Image.Image):
        return to_rgb(src, name)
    if isinstance(src, (str, os.PathLike)):
        fp: object = existing_file(src, ImageError, "an image")
    else:
        if not src:
            raise ImageError(name, "empty file (0 bytes)")
        fp = io.BytesIO(src)
    try:
        with warnings.catch_warnings():
            # Up to 2x Pillow's MAX_IMAGE_PIXELS (about 179 MP) is a big photo,
            # not an attack: decode it (JPEGs at reduced scale, see draft).
            # Beyond that Pillow raises DecompressionBombError: refused.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(fp)
            if min_size and img.format == "JPEG":
                img.draft(img.mode, (min_size, min_size))
            img.load()
            return to_rgb(img, name)
    except UnidentifiedImageError:
        raise ImageError(name, "not an image, or an image format Pillow cannot read") from None
    except Image.DecompressionBombError as e:
        raise ImageError(name, f"image too large to decode safely ({e.args[0].split('(')[0].strip()})") from None
    except PermissionError:
        raise ImageError(name, "permission denied") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        msg = str(e) or type(e).__name__
        if "truncated" in msg or isinstance(e, EOFError):
            raise ImageError(name, f"truncated image ({msg})") from None
        raise ImageError(name, f"corrupt image ({msg})") from None


def to_rgb(img: Image.Image, name: str = "<image>") -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB, applying EXIF orientation."""
    if getattr(img, "n_frames", 1) > 1:
        img.seek(0)
    try:
        img = ImageOps.exif_transpose(img)
    except Exception:  # a broken EXIF block is no reason to lose the photo
        pass
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        a = np.asarray(img, dtype=np.float64)
        if mode == "F" and a.size and np.nanmax(a) <= 1.0:
            a = a * 255.0
        elif mode.startswith("I;16") or (a.size and a.max() > 255):
            a = a / 257.0  # 16-bit range onto 8-bit
        a = np.nan_to_num(a).clip(0, 255).round().astype(np.uint8)
        return Image.fromarray(a, "L").convert("RGB")
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    try:
        return img.convert("RGB")
    except (ValueError, OSError) as e:
        raise ImageError(name, f"unsupported colour mode {mode} ({e})") from None


def square_crop_resize(img: Image.Image, size: int = 256) -> np.ndarray:
    """§2: rescale the short side to ``size``, then take the central size x size patch.

    Done as one resize of the central square of the source (Pillow's
    ``box``), which is the same result without materialising the full
    rescaled image, so extreme aspect ratios cost nothing. Returns uint8 HWC.
    """
    w, h = img.size
    m = min(w, h)
    left, top = (w - m) / 2, (h - m) / 2
    out = img.resize((size, size), Image.Resampling.BILINEAR, box=(left, top, left + m, top + m))
    return np.array(out, dtype=np.uint8)  # a writable copy (torch warns on read-only arrays)


def warp_resize(img: Image.Image, size: int = 256) -> np.ndarray:
    """The whole photo squeezed to size x size (Caffe's ``convert_imageset``): uint8 HWC."""
    return np.array(img.resize((size, size), Image.Resampling.BILINEAR), dtype=np.uint8)


def load_square(src: ImageSource, size: int = 256, mode: str = "crop") -> np.ndarray:
    """A photo as the network sees it before cropping: uint8 (size, size, 3).

    ``size`` and ``mode`` are ``meta.preprocess.resize`` and
    ``meta.preprocess.resize_mode`` (or call ``meta.preprocess.load(src)``):
    ``"warp"`` squeezes the whole photo as the model's source did (Caffe),
    ``"crop"`` takes the central square as in §2.
    """
    if mode not in RESIZE_MODES:
        raise ValueError(f"resize mode must be one of {RESIZE_MODES}, got {mode!r}")
    img = open_image(src, min_size=size)
    if mode == "warp":
        return warp_resize(img, size)
    return square_crop_resize(img, size)
