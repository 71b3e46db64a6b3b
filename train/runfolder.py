"""A run folder (``--out``): what an earlier run left there, the refusal, and ``--overwrite``.

``train`` never deletes a run on its own. A fresh run (no ``--resume``) in a
folder that holds an earlier run is refused in one line, before anything is
read, packed or written; ``--resume`` continues that run, ``--overwrite``
replaces it. Under DDP every rank makes the same read-only check before the
process group starts, so either every rank refuses or none does, and only
rank 0 removes anything (after every rank has checked).

An earlier run is what only training writes and what is worth keeping: a
training state (``checkpoints/step-*.pt``, ``checkpoints/best.pt``), a model
(``model.safetensors``, ``last.safetensors``) or the per-epoch metrics
(``metrics.csv``, ``metrics.jsonl``, written with each epoch's state). Not
an earlier run: ``packed/`` (data, reused as it is), and ``tensorboard/`` or
``curves.png`` alone (the TensorBoard folder appears when training starts,
so a run killed before its first save leaves nothing else, and nothing to
resume). ``--overwrite`` removes the run's files, the logs included, and
keeps ``packed/`` and whatever other commands put in the folder (an exported
``model.onnx``, an index).
"""
from __future__ import annotations

import re
import shutil
from pathlib import Path

from alexnet_kit.errors import AlexKitError

#: what a run says on its first SIGTERM/SIGINT (torch-free, so the CLI can install the handler first)
STOP_NOTICE = "finishing the current step, then saving a training state"
_STEP = re.compile(r"step-(\d+)\.pt$")
#: what makes a folder hold an earlier run, besides its training states
RESULTS = ("model.safetensors", "last.safetensors", "metrics.csv", "metrics.jsonl")
#: removed with a run, but alone not one
LOGS = ("curves.png", "tensorboard")


def state_path(folder: Path, step: int) -> Path:
    """A training state's file (:mod:`.training_state` writes and reads them)."""
    return folder / f"step-{step:08d}.pt"


def list_states(folder: Path) -> list[Path]:
    """The training states in ``folder``, oldest step first."""
    if not folder.is_dir():
        return []
    return sorted((p for p in folder.iterdir() if _STEP.search(p.name)), key=lambda p: int(_STEP.search(p.name).group(1)))


def latest_state(folder: Path) -> Path | None:
    states = list_states(folder)
    return states[-1] if states else None


def earlier_run(out: str | Path) -> list[Path]:
    """The files of an earlier run in ``out`` (empty: none). Reads only."""
    out = Path(out)
    ck = out / "checkpoints"
    return list_states(ck) + [p for p in [ck / "best.pt", *(out / n for n in RESULTS)] if p.is_file()]


def describe(files: list[Path]) -> str:
    states = [p for p in files if p.name.startswith("step-")]
    rest = [p.name for p in files if p not in states]
    parts = ([f"{len(states)} training state{'s' if len(states) != 1 else ''}"] if states else []) + rest
    return ", ".join(parts)


def refuse_earlier_run(out: str | Path, resume: str | None, overwrite: bool) -> None:
    """One-line refusal of a fresh run in a folder that holds an earlier one (reads only)."""
    if resume and overwrite:
        raise AlexKitError("--resume continues the run in --out and --overwrite replaces it: give one of them")
    if resume or overwrite:
        return
    found = earlier_run(out)
    if found:
        raise AlexKitError(f"{out} holds an earlier run ({describe(found)}): continue it with --resume, "
                           f"train into another --out, or replace it with --overwrite")


def remove_run(out: str | Path) -> list[Path]:
    """``--overwrite``: remove the earlier run's files (states, best.pt, models, metrics, logs, and
    half-written temporary files of its checkpoints); ``packed/`` and other commands' files stay."""
    out = Path(out)
    ck = out / "checkpoints"
    removed = earlier_run(out)
    for p in removed:
        p.unlink()
    # atomic_path's temporaries of writes that were killed
    for p in [*(ck.glob(".*.tmp") if ck.is_dir() else ()), *(t for n in RESULTS for t in out.glob(f".{n}.*.tmp"))]:
        p.unlink()
        removed.append(p)
    for name in LOGS:
        p = out / name
        if p.is_dir():
            shutil.rmtree(p)
            removed.append(p)
        elif p.is_file():
            p.unlink()
            removed.append(p)
    return removed
