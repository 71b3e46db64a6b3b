"""Which file names are photos: the one suffix rule for every folder walk (numpy- and Pillow-free)."""
from __future__ import annotations

import os
from pathlib import Path

IMAGE_SUFFIXES = frozenset(
    ".jpg .jpeg .jpe .jfif .png .bmp .gif .tif .tiff .webp .ppm .pgm .pbm .pnm .ico .tga".split()
)


def is_image_path(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in IMAGE_SUFFIXES
