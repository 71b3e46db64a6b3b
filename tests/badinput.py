"""A corpus of real-world awkward photos and broken files, made from a real photo.

``make_corpus(dir)`` returns (good, bad): ``good`` maps each awkward-but-valid
file to a reference image that must load to the same pixels (up to codec
rounding); ``bad`` maps each unreadable file to a word its error must contain.
"""
from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from helpers import EXAMPLES

EXAMPLE = EXAMPLES / "chelsea.png"


def _png_with_size(path: Path, width: int, height: int) -> None:
    """A valid PNG header claiming huge dimensions (a decompression bomb)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def make_corpus(d: Path) -> tuple[dict[Path, Image.Image], dict[Path, str]]:
    base = Image.open(EXAMPLE).convert("RGB").resize((320, 240))
    good: dict[Path, Image.Image] = {}

    p = d / "plain.png"; base.save(p); good[p] = base
    gray = base.convert("L")
    p = d / "gray.png"; gray.save(p); good[p] = gray.convert("RGB")
    p = d / "gray.jpg"; gray.save(p, quality=95); good[p] = gray.convert("RGB")
    rgba = base.copy(); rgba.putalpha(255)
    p = d / "alpha_opaque.png"; rgba.save(p); good[p] = base
    half = base.copy(); a = np.full((240, 320), 255, np.uint8); a[:, :160] = 0; half.putalpha(Image.fromarray(a))
    white_left = np.asarray(base).copy(); white_left[:, :160] = 255
    p = d / "alpha_half.png"; half.save(p); good[p] = Image.fromarray(white_left)  # composited on white
    pal = base.convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    p = d / "palette.png"; pal.save(p); good[p] = pal.convert("RGB")
    g16 = Image.fromarray(np.asarray(gray, np.uint16) * 257)  # full 16-bit range
    p = d / "gray16.png"; g16.save(p); good[p] = gray.convert("RGB")
    p = d / "cmyk.tif"; base.convert("CMYK").save(p); good[p] = base
    p = d / "cmyk.jpg"; base.convert("CMYK").save(p, quality=95); good[p] = base
    exif = Image.Exif(); exif[0x0112] = 6  # orientation: rotate 90 CW to display
    p = d / "exif_rotated.png"; base.transpose(Image.Transpose.ROTATE_90).save(p, exif=exif); good[p] = base
    tiny = base.resize((20, 15))
    p = d / "tiny.png"; tiny.save(p); good[p] = tiny
    p = d / "gif.gif"; base.save(p); good[p] = Image.open(p).convert("RGB")
    wide = Image.new("RGB", (6000, 40), (10, 200, 30))
    p = d / "very_wide.png"; wide.save(p); good[p] = wide

    bad: dict[Path, str] = {}
    jpg = d / "whole.jpg"; base.save(jpg, quality=90)
    p = d / "truncated.jpg"; p.write_bytes(jpg.read_bytes()[: jpg.stat().st_size // 2]); bad[p] = "truncated"
    jpg.unlink()
    p = d / "empty.jpg"; p.write_bytes(b""); bad[p] = "empty"
    p = d / "notes.jpg"; p.write_text("these are not pixels\n"); bad[p] = "not an image"
    p = d / "garbage.png"; p.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00garbage" * 50); bad[p] = "image"
    p = d / "bomb.png"; _png_with_size(p, 40_000, 40_000); bad[p] = "too large"
    bad[d / "missing.jpg"] = "not found"
    return good, bad
