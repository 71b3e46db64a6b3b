"""Training state on disk: atomic, the last K kept, resumable exactly.

A training-state file (``checkpoints/step-00001234.pt``) holds the grouped
weights, the optimizer velocities, the schedule, the position in the data
(epoch and next batch), the RNG states, the per-epoch history and the
recipe. It is written with ``torch.save`` to a temporary file, fsynced and
renamed (:func:`alexnet_kit.fsutil.atomic_path`), and read back with
``torch.load(weights_only=True)``: tensors, numbers, strings, lists and dicts
only, so a checkpoint cannot run code. The model a user keeps is
``model.safetensors`` (the best epoch, written by the trainer with
:func:`alexnet_kit.checkpoint.save_checkpoint`).
"""
from __future__ import annotations

import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from alexnet_kit.errors import CheckpointError
from alexnet_kit.fsutil import atomic_path

# Where the states are is the run folder's layout, in .runfolder (torch-free: the refusal of a
# used --out reads it); this module's API keeps list_states, latest_state and state_path.
from . import runfolder
from .runfolder import list_states, state_path

latest_state = runfolder.latest_state

STATE_VERSION = 1


def save_state(folder: Path, state: dict, keep_last: int = 3) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = state_path(folder, int(state["global_step"]))
    state = dict(state, version=STATE_VERSION)
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    for old in list_states(folder)[:-keep_last] if keep_last > 0 else []:
        old.unlink(missing_ok=True)
    return path


def link_or_copy(src: Path, dst: Path) -> Path:
    """``dst`` as a hard link to ``src``: no second write of a large file.

    Atomic like every write here (a link beside, renamed over), and the link
    outlives a later removal of ``src`` (keep-last-K pruning). A filesystem
    without hard links gets a copy.
    """
    with atomic_path(dst) as tmp:
        tmp.unlink()
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)
    return dst


def link_best(folder: Path, state_file: Path) -> Path:
    """``best.pt``: the best state so far, linked, not written again (~0.5-1.5 GB)."""
    return link_or_copy(state_file, folder / "best.pt")


class BackgroundWriter:
    """Writes checkpoints from one background thread, so the step loop does not wait on the disk.

    The caller snapshots the state to host memory first (the tensors are
    copies), so the training step may change the weights while the file is
    written. At most one write is in flight: a new one waits for the previous
    one (bounded host memory, files in order). Errors surface at the next
    :meth:`submit` or :meth:`wait`.
    """

    def __init__(self):
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="checkpoint")
        self._last = None

    def submit(self, fn, *args, **kwargs):
        self.wait()
        self._last = self._pool.submit(fn, *args, **kwargs)
        return self._last

    def wait(self):
        last, self._last = self._last, None
        return last.result() if last is not None else None

    def close(self) -> None:
        try:
            self.wait()
        finally:
            self._pool.shutdown(wait=True)


def load_state(path: Path) -> dict:
    if not path.is_file():
        raise CheckpointError(path, "file not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip, foreign pickle refused by weights_only, ...
        raise CheckpointError(path, f"not a readable training state ({str(e).splitlines()[0][:160]})") from None
    if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
        raise CheckpointError(path, "not an alexnet-kit training state of this version")
    return state


def rng_state() -> dict:
    """The CPU generator only. Every step reseeds all generators from (seed, rank, step), so
    CUDA RNG states carry nothing a resume needs, and saving them (one per visible GPU) made
    a checkpoint resumable only on at least as many GPUs."""
    return {"torch": torch.get_rng_state()}


def set_rng_state(st: dict) -> None:
    # "cuda" entries of older checkpoints are ignored: see rng_state
    torch.set_rng_state(st["torch"])
