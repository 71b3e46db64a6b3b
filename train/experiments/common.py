"""What every experiment shares: photo caches, seeds, the results file, the machine.

Decoding thousands of JPEGs costs more than a small experiment's training on
this CPU, so each data set is decoded once into a uint8 array and cached as
``.npz`` (keyed by the folder, the photo size and the file list) under
``$ALEXNET_KIT_CACHE`` or ``~/.cache/alexnet-kit``.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import random
import time
from pathlib import Path

import numpy as np
import torch

from alexnet_kit import paths
from alexnet_kit.errors import AlexKitError, ImageError
from alexnet_kit.fsutil import atomic_path
from alexnet_kit.images import load_square

SIZES = ("tiny", "default", "full")
# The checkout; from an installed wheel the current folder (runs/ and experiments/results/ are looked for there).
ROOT = paths.checkout() or Path.cwd()


def shared_data(*parts: str) -> Path:
    """A folder in the shared real data (``$ALEXNET_KIT_SHARED_DATA`` or ../shared/data beside the checkout);
    a one-line error saying how to supply it when it is absent."""
    return paths.shared_data(*parts)


def cache_dir() -> Path:
    d = Path(os.environ.get("ALEXNET_KIT_CACHE", Path.home() / ".cache" / "alexnet-kit"))
    d.mkdir(parents=True, exist_ok=True)
    return d


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def class_folders(root: Path) -> list[Path]:
    if not root.is_dir():
        raise AlexKitError(f"{root}: data folder not found (see ../shared/data/README.md)")
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def photo_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))


def load_photos(files: list[Path], size: int, what: str = "photos", mode: str = "crop") -> tuple[np.ndarray, np.ndarray]:
    """Decode ``files`` to uint8 (N, size, size, 3) with resize ``mode``, cached; returns (photos, ok mask).

    Bad photos are skipped and counted, never fatal (ok[i] is False).
    """
    # the resize mode is part of the key: a warp model and a crop model on the
    # same files must not share decoded photos (crop keys stay as they were)
    tag = "" if mode == "crop" else f"|{mode}"
    key = hashlib.sha256(("\n".join(str(f) for f in files) + f"|{size}{tag}").encode()).hexdigest()[:20]
    path = cache_dir() / f"{what}-{size}{tag.replace('|', '-')}-{key}.npz"
    if path.exists():
        with np.load(path) as z:
            return z["photos"], z["ok"]
    from tqdm import tqdm

    photos = np.zeros((len(files), size, size, 3), np.uint8)
    ok = np.ones(len(files), bool)
    for i, f in enumerate(tqdm(files, desc=f"decode {what}", unit="img", leave=False)):
        try:
            photos[i] = load_square(f, size, mode)
        except ImageError as e:
            ok[i] = False
            print(f"skipped {e}")
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, photos=photos, ok=ok)
    return photos, ok


def machine() -> dict:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


def write_results(out: Path, name: str, results: dict) -> Path:
    """``out/name.json``, written atomically, with the date and the machine."""
    out.mkdir(parents=True, exist_ok=True)
    results = {"experiment": name, "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               "machine": machine(), **results}
    path = out / f"{name}.json"
    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(results, indent=2, default=_jsonable) + "\n")
    return path


def _jsonable(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o)}")


def mean_std(values: list[float]) -> tuple[float, float]:
    a = np.asarray([v for v in values if v is not None and np.isfinite(v)], np.float64)
    if a.size == 0:
        return float("nan"), float("nan")
    return float(a.mean()), float(a.std(ddof=1)) if a.size > 1 else 0.0


def savefig(fig, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    return path
