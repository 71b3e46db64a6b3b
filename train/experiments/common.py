"""What every experiment shares: photo caches, seeds, the results file, the machine, stopping.

Decoding thousands of JPEGs costs more than a small experiment's training on
this CPU, so each data set is decoded once into a uint8 array and cached as
``.npz`` (keyed by the folder, the photo size and the file list) in the
package's cache folder, :func:`alexnet_kit.paths.cache_root`
(``$XDG_CACHE_HOME/alexnet-kit``, ``~/.cache/alexnet-kit`` when unset).

Stopping: ``alexnet-kit reproduce`` runs inside :func:`stop_on_signal`. A
SIGTERM or SIGINT (to the main process or its whole group) ends every run in
progress at its next training step (:func:`check_stop` raises
:class:`Stopped`); finished stages stay in the experiment's
``*.partial.*.json`` files, from which the same command continues. Worker
processes ignore the signals themselves and learn of the stop from a shared
value the main process sets while it waits for them (:func:`wait_for`).
"""
from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import os
import platform
import random
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import torch
from tqdm import tqdm

from alexnet_kit import paths
from alexnet_kit.errors import AlexKitError, ImageError
from alexnet_kit.fsutil import atomic_path
from alexnet_kit.images import load_square
from alexnet_kit.interrupt import StopOnSignal, ignore_in_worker, starting_workers

SIZES = ("tiny", "default", "full")
# The checkout; from an installed wheel the current folder (runs/ and experiments/results/ are looked for there).
ROOT = paths.checkout() or Path.cwd()


def shared_data(*parts: str) -> Path:
    """A folder in the shared real data (``$ALEXNET_KIT_SHARED_DATA`` or ../shared/data beside the checkout);
    a one-line error saying how to supply it when it is absent."""
    return paths.shared_data(*parts)


def cache_dir() -> Path:
    """Where decoded photos are cached: the package's cache folder itself, where they always were."""
    d = paths.cache_root()
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
    photos = np.zeros((len(files), size, size, 3), np.uint8)
    ok = np.ones(len(files), bool)
    for i, f in enumerate(tqdm(files, desc=f"decode {what}", unit="img", leave=False)):
        check_stop()
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


# -- stopping on SIGTERM / SIGINT (module docstring) ---------------------------------------
class Stopped(Exception):
    """A run left at a training step because a stop was asked; its stage is redone by the next run.
    Plain ``args`` so that it pickles: it crosses from worker processes through their futures."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = int(signum)


_stop = None  # this process's stop request: a StopOnSignal (main process) or a shared value (worker)
_shared = None  # the main process's value that its workers read (set by wait_for)


def requested() -> int:
    """The signal this process was asked to stop by (0: none, or outside :func:`stop_on_signal`)."""
    if isinstance(_stop, StopOnSignal):
        return _stop.signum or 0
    return int(_stop.value) if _stop is not None else 0


def check_stop() -> None:
    """Between training steps (and photo decodes): raise :class:`Stopped` once a stop was asked."""
    signum = requested()
    if signum:
        raise Stopped(signum)


@contextmanager
def stop_on_signal(notice: str = "stopping the runs at their next step; finished ones are kept") -> Iterator[StopOnSignal]:
    """The experiment's main process: signals set the request that :func:`check_stop` reads, here and
    (through :func:`worker_pool`'s shared value) in the worker processes."""
    global _stop, _shared
    with StopOnSignal(notice) as stop:
        _stop, _shared = stop, mp.get_context("spawn").Value("i", 0, lock=False)
        try:
            yield stop
        finally:
            _stop, _shared = None, None


def worker_pool(jobs: int):
    """A spawn ProcessPoolExecutor whose workers ignore the group's signals and see the main
    process's stop request (outside :func:`stop_on_signal`: a plain one). Submit with :func:`submit`."""
    ctx = mp.get_context("spawn")
    if _shared is None:
        return ProcessPoolExecutor(jobs, mp_context=ctx)
    return ProcessPoolExecutor(jobs, mp_context=ctx, initializer=_worker_init, initargs=(_shared,))


def submit(pool, fn, *args) -> Future:
    """``pool.submit``; a worker process it starts is shielded from the group's signals until it
    ignores them (:func:`~alexnet_kit.interrupt.starting_workers`)."""
    if _shared is None:
        return pool.submit(fn, *args)
    with starting_workers():
        return pool.submit(fn, *args)


def _worker_init(shared) -> None:
    global _stop
    ignore_in_worker()
    _stop = shared


def wait_for(futures: Iterable[Future]) -> Iterator[Future]:
    """The futures as they finish (``as_completed``), passing a stop request on to the workers
    while waiting; once stopped, the ones not yet started are cancelled (not yielded)."""
    pending = set(futures)
    while pending:
        done, pending = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
        signum = requested()
        if signum and _shared is not None and not _shared.value:
            _shared.value = signum
            for f in pending:
                f.cancel()
        for f in done:
            if not f.cancelled():
                yield f
        pending = {f for f in pending if not f.cancelled()}


def finished(futures: Iterable[Future]) -> Iterator[tuple[Future, object]]:
    """(future, result) as they finish (:func:`wait_for`). Runs that a stop ended are left out and,
    once every running one has ended, :class:`Stopped` is raised (what finished was yielded first)."""
    for f in wait_for(futures):
        try:
            yield f, f.result()
        except Stopped:
            pass
    check_stop()
