"""The precision gate: a precision other than the reference must agree with fp32 on real photos.

A candidate passes only if, on real photos (centre crop), its top-1 label
agrees with the reference's on at least :data:`SERVING_MIN_TOP1` of them and
its fc7 features have a mean cosine of at least :data:`SERVING_MIN_COSINE`
to the reference's (search needs the features, not only the label).
:func:`measure_candidates` takes those numbers, and the speed at the batch size asked
for, and stores them (:mod:`.measurements`).

The reference photos (:func:`reference_photos`) are the ones the export
stage verifies an artifact on too.
"""
from __future__ import annotations

import datetime
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from tqdm import tqdm

from ..errors import AlexKitError, ImageError
from ..images import find_images
from ..paths import example_photos, optional_shared
from . import cpu, messages
from .base import Engine, run_batches
from .candidates import Candidate
from .errors import NoReferencePhotos
from .loaders import open_path
from .measurements import read_measurements, sidecar_path, stamp, write_measurements
from .precision import SERVING_MIN_COSINE, SERVING_MIN_TOP1
from .timing import speed

#: how many real photos the gate measures on
GATE_PHOTOS = 200


@dataclass(frozen=True)
class Gate:
    """Thresholds a precision other than the reference must meet."""

    min_top1: float = SERVING_MIN_TOP1
    min_cosine: float = SERVING_MIN_COSINE

    @classmethod
    def from_env(cls) -> "Gate":
        """The defaults, or ``ALEXNET_KIT_GATE_MIN_TOP1`` / ``ALEXNET_KIT_GATE_MIN_COSINE`` when set."""
        try:
            return cls(float(os.environ.get("ALEXNET_KIT_GATE_MIN_TOP1", cls.min_top1)),
                       float(os.environ.get("ALEXNET_KIT_GATE_MIN_COSINE", cls.min_cosine)))
        except ValueError:
            raise AlexKitError("ALEXNET_KIT_GATE_MIN_TOP1 / ALEXNET_KIT_GATE_MIN_COSINE must be numbers") from None

    def failure(self, m: dict) -> str | None:
        """Why measurement ``m`` fails the gate, or None when it passes."""
        why = []
        if m["top1_agreement"] < self.min_top1:
            why.append(f"top-1 agreement with fp32 {m['top1_agreement']:.2%} < {self.min_top1:.2%}")
        if m["fc7_cosine"] < self.min_cosine:
            why.append(f"fc7 cosine to fp32 {m['fc7_cosine']:.5f} < {self.min_cosine:.5f}")
        return "; ".join(why) or None


# -- real photos -----------------------------------------------------------------

def _images_in(folder: Path | None) -> list[Path]:
    return [Path(f) for f in find_images([folder])] if folder and folder.is_dir() else []


def reference_photos() -> list[Path]:
    """The example photos (the checkout's, or those shipped in the package), plus the shared data's photos
    where present: what an export is verified on, and where the gate's photos start."""
    return example_photos() + _images_in(optional_shared("photos"))


def gate_photos(limit: int = GATE_PHOTOS) -> list[Path]:
    """Real photos for the gate: ``$ALEXNET_KIT_GATE_PHOTOS``, else the :func:`reference_photos` plus the
    shared data's ImageNet samples where present (spread over the classes)."""
    env = os.environ.get("ALEXNET_KIT_GATE_PHOTOS")
    if env:
        files = _images_in(Path(env))
        return files[:: max(1, len(files) // limit)][:limit]
    files = reference_photos()
    samples = _images_in(optional_shared("imagenet-samples"))
    room = max(0, limit - len(files))
    if samples and room:
        files += samples[:: max(1, len(samples) // room)][:room]
    return files[:limit]


def centre_crops(meta, photos: Sequence[Path]) -> torch.Tensor:
    """The centre crops of the readable ``photos`` (the unreadable are skipped)."""
    loaded = []
    for p in photos:
        try:
            loaded.append(meta.preprocess.load(p))
        except ImageError:
            continue
    if not loaded:
        return torch.empty(0)
    return meta.preprocess.crops(np.stack(loaded), 1)


# -- measuring ---------------------------------------------------------------------

def _measurement(c: Candidate, ref: Candidate, engine: Engine, outputs, reference, x: torch.Tensor,
                 batch: int, threads: int | None, machine: dict) -> dict:
    (logits, feats), (ref_logits, ref_feats) = outputs, reference
    cos = torch.nn.functional.cosine_similarity(feats.double(), ref_feats.double(), dim=1, eps=1e-12)
    m = {
        "engine": c.engine, "precision": str(c.precision), "runs": engine.description,
        "runs_precision": str(engine.precision), "fingerprint": engine.fingerprint,
        "file": stamp(c.path), "reference": ref.name, "reference_file": stamp(ref.path),
        "machine": machine, "photos": len(x), "crop": "centre",
        "top1_agreement": float((logits.argmax(1) == ref_logits.argmax(1)).double().mean()),
        "fc7_cosine": float(cos.mean()), "fc7_cosine_min": float(cos.min()),
        "max_abs_logit_diff": float((logits - ref_logits).abs().max()),
        "batch": batch, "threads": getattr(engine, "threads", threads),
        "crops_per_s": round(speed(engine, x, batch), 2),
        "measured_at": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    m["speeds"] = {str(batch): m["crops_per_s"]}
    return m


def measure_candidates(model: Path, todo: list[Candidate], ref: Candidate, *, device: str = "cpu", threads: int | None = None,
            batch: int = 80, photos: Sequence[Path] | None = None,
            log: Callable[[str], None] | None = None) -> dict[Candidate, dict]:
    """Measure ``todo`` against ``ref`` on real photos; store and return {candidate: measurement}."""
    photos = list(photos) if photos is not None else gate_photos()
    machine = cpu.machine_class()
    ref_engine = open_path(ref.engine, ref.precision, ref.path, device, threads, batch)
    x = centre_crops(ref_engine.meta, photos)
    names = ", ".join(c.name for c in todo)
    if len(x) == 0:
        raise NoReferencePhotos(messages.say("no_photos", model=model, names=names))
    if log:
        log(messages.say("measuring", names=names, ref=ref.name, photos=len(x), cpu=machine["cpu"],
                         sidecar=sidecar_path(model).name))
    reference = run_batches(ref_engine.logits_and_features, x, batch)
    out: dict[Candidate, dict] = {}
    for c in tqdm(todo, desc="engines", unit="path", file=sys.stderr, disable=None if log else True, leave=False):
        engine = ref_engine if c == ref else open_path(c.engine, c.precision, c.path, device, threads, batch)
        outputs = reference if c == ref else run_batches(engine.logits_and_features, x, batch)
        out[c] = _measurement(c, ref, engine, outputs, reference, x, batch, threads, machine)
        del engine  # one candidate's session at a time
    write_measurements(model, list(out.values()))
    return out


def describe_measurements(model: str | os.PathLike, gate: Gate | None = None) -> list[str]:
    """One line per stored measurement with the gate's verdict, this machine class first (``alexnet-kit info``)."""
    gate = gate or Gate.from_env()
    here = cpu.machine_class()["key"]
    lines = []
    for m in sorted(read_measurements(model), key=lambda m: (m["machine"]["key"] != here, m["engine"], m["precision"])):
        try:
            verdict = "reference" if m["engine"] + " " + m["precision"] == m["reference"] else (
                "passes" if gate.failure(m) is None else "FAILS: " + gate.failure(m))
            where = "this CPU" if m["machine"]["key"] == here else m["machine"]["cpu"]
            lines.append(f"{m['engine']} {m['precision']} on {where}: {m['crops_per_s']:.1f} crops/s (batch {m['batch']}), "
                         f"top-1 agreement {m['top1_agreement']:.2%}, fc7 cosine {m['fc7_cosine']:.5f} "
                         f"on {m['photos']} photos; {verdict}; {m['measured_at']}")
        except (KeyError, TypeError):
            continue
    return lines
