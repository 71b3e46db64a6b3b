"""The measurement store: the precision gate's numbers and speeds, kept in a JSON sidecar beside the model.

``model.onnx.serving.json`` (in the user cache folder when the model's folder
is read-only) holds one entry per machine class (:mod:`.cpu`), engine,
precision and file: the gate's agreement numbers, measured once whatever the
batch, and the speed at every batch size it was timed at (``speeds``).

Legacy format: entries written before speeds were kept per batch have only
``batch`` and ``crops_per_s``; they still open, and :func:`speed_at` reads
their one speed at that batch.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from ..errors import AlexKitError
from ..fsutil import atomic_path
from ..paths import cache_root
from . import messages
from .candidates import Candidate

SIDECAR_SUFFIX = ".serving.json"
STORE_VERSION = 1


def sidecar_path(model: Path) -> Path:
    return model.with_name(model.name + SIDECAR_SUFFIX)


def cache_path(model: Path) -> Path:
    key = hashlib.sha256(str(model.resolve()).encode()).hexdigest()[:24]
    return cache_root() / "serving" / f"{key}.json"


def read_measurements(model: str | os.PathLike) -> list[dict]:
    """Every stored measurement for ``model`` (any machine), sidecar and cache together."""
    model = Path(model)
    out: list[dict] = []
    for p in (sidecar_path(model), cache_path(model)):
        try:
            d = json.loads(p.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(d, dict) and d.get("version") == STORE_VERSION and isinstance(d.get("measurements"), list):
            out += [m for m in d["measurements"] if _valid(m)]
    return out


def _valid(m) -> bool:
    """A stored entry with every field the choice and ``info`` read (a hand-edited or truncated one is skipped)."""
    num = (int, float)
    try:
        return (isinstance(m["machine"]["key"], str) and isinstance(m["machine"]["cpu"], str)
                and all(isinstance(m[k], str) for k in ("engine", "precision", "reference", "measured_at"))
                and isinstance(m["file"], dict) and isinstance(m["file"]["file"], str)
                and isinstance(m["reference_file"], dict)
                and all(isinstance(m[k], num) and not isinstance(m[k], bool)
                        for k in ("top1_agreement", "fc7_cosine", "crops_per_s", "batch", "photos")))
    except (KeyError, TypeError):
        return False


def stamp(path: Path) -> dict:
    """What identifies a file's version in the store: name, size and mtime."""
    st = path.stat()
    return {"file": path.name, "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _key(m: dict) -> tuple:
    # no batch: the gate verdict holds for any batch size; speeds per batch live inside the entry
    return (m["machine"]["key"], m["engine"], m["precision"], m["file"]["file"])


def speed_at(m: dict, batch: int) -> float | None:
    """Stored crops/s of measurement ``m`` at ``batch`` crops a call, or None when not timed at that batch."""
    speeds = m.get("speeds")
    if isinstance(speeds, dict) and isinstance(speeds.get(str(batch)), (int, float)):
        return float(speeds[str(batch)])
    if m.get("batch") == batch and isinstance(m.get("crops_per_s"), (int, float)):
        return float(m["crops_per_s"])  # the legacy format: one speed, at the batch it was measured at
    return None


def write_measurements(model: Path, new: list[dict]) -> Path:
    """Merge ``new`` into the stored ones (a newer measurement replaces the same key); atomic."""
    keys = {_key(m) for m in new}
    kept = [m for m in read_measurements(model) if _key(m) not in keys]
    doc = json.dumps({"version": STORE_VERSION, "model": model.name, "measurements": kept + new}, indent=1)
    for target in (sidecar_path(model), cache_path(model)):
        try:
            with atomic_path(target) as tmp:
                tmp.write_text(doc)
            return target
        except OSError:  # a read-only model folder: the user's cache instead
            continue
    raise AlexKitError(messages.say("cannot_store", model=model, cache=cache_path(model).parent))


def _speeds(m: dict) -> dict[str, float]:
    """Every batch size ``m`` was timed at (the legacy format's one speed included)."""
    out: dict[str, float] = {}
    if isinstance(m.get("batch"), int) and isinstance(m.get("crops_per_s"), (int, float)):
        out[str(m["batch"])] = float(m["crops_per_s"])
    if isinstance(m.get("speeds"), dict):
        out.update({k: float(v) for k, v in m["speeds"].items() if isinstance(v, (int, float))})
    return out


def stored(model: Path, c: Candidate, ref: Candidate, machine: dict) -> dict | None:
    """The gate measurement of ``c`` on this machine class (any batch), if its files are unchanged since;
    ``speeds`` gathers every batch size it was timed at."""
    want_file, want_ref = stamp(c.path), stamp(ref.path)
    found = None
    speeds: dict[str, float] = {}
    for m in read_measurements(model):
        try:
            if (m["machine"]["key"] == machine["key"] and m["engine"] == c.engine and m["precision"] == c.precision
                    and m["file"] == want_file and m["reference_file"] == want_ref):
                found = m
                speeds.update(_speeds(m))
        except (KeyError, TypeError, AttributeError):
            continue
    return None if found is None else {**found, "speeds": speeds}
