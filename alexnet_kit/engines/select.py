"""Which engine and precision serve a model on this machine, verified, never assumed.

``open_engine(model, engine="auto", precision="auto")`` lists what can run
the file here:

* an fp32 ``.onnx``: onnxruntime fp32, OpenVINO fp32, OpenVINO bf16 (only
  where /proc/cpuinfo shows ``amx_bf16`` or ``avx512_bf16``), and, when the
  int8 export ``X.int8.onnx`` lies beside it, onnxruntime and OpenVINO on it;
* a checkpoint: torch fp32, and torch bf16 autocast on a CPU with native bf16;
* ``.ts`` / ``.pt2``: torch fp32.

fp32 on onnxruntime (torch for a checkpoint) is the reference. Every other
candidate passes the *gate* only if, on real photos (centre crop), its top-1
label agrees with the reference's on at least 99.5% of them and its fc7
features have a mean cosine of at least 0.999 to the reference's (search
needs the features, not only the label). The gate's numbers are measured once per
model file, machine class (CPU model + flags, :mod:`.cpu`) and candidate,
whatever the batch; only speed depends on the batch (crops per call), so a
new batch size re-times the passing candidates with a few calls and does not
re-run the gate. Both are stored in
a JSON sidecar beside the model (``model.onnx.serving.json``; in the user
cache folder when the model's folder is read-only). ``auto`` then picks the
fastest candidate that passes; a precision asked for by name that fails is
refused in one line. ``alexnet-kit info MODEL`` prints the stored numbers.
"""
from __future__ import annotations

import datetime
import hashlib
import importlib
import json
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from ..errors import AlexKitError, CheckpointError
from ..paths import cache_root
from . import cpu
from .base import Engine

ENGINES = ("onnxruntime", "openvino", "torch")
PRECISIONS = ("fp32", "bf16", "int8")
SIDECAR_SUFFIX = ".serving.json"
STORE_VERSION = 1
GATE_PHOTOS = 200


@dataclass(frozen=True)
class Gate:
    """Thresholds a precision other than the reference must meet."""

    min_top1: float = 0.995
    min_cosine: float = 0.999

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


@dataclass(frozen=True)
class Candidate:
    engine: str
    precision: str
    path: Path  # the file this candidate runs (the int8 export for int8)

    @property
    def name(self) -> str:
        return f"{self.engine} {self.precision}"


# -- what can run here ---------------------------------------------------

def engine_available(name: str) -> bool:
    """The runtime imports here (a broken or absent install counts as absent)."""
    module = {"onnxruntime": "onnxruntime", "openvino": "openvino", "torch": "torch"}[name]
    try:
        importlib.import_module(module)
    except Exception:  # ImportError, or a half-installed package failing at import
        return False
    return True


def model_files(model: Path) -> tuple[Path | None, Path | None]:
    """(fp32 file, int8 file) of an ONNX model: the file given and its sibling by export's naming."""
    name = model.name
    if name.lower().endswith(".int8.onnx"):
        fp32 = model.with_name(name[: -len(".int8.onnx")] + ".onnx")
        return (fp32 if fp32.is_file() else None), model
    int8 = model.with_name(model.name[: -len(model.suffix)] + ".int8.onnx")
    return model, (int8 if int8.is_file() else None)


def candidates(model: Path) -> tuple[list[Candidate], Candidate | None]:
    """Everything that can run ``model`` here, and the fp32 reference (None when there is no fp32 file)."""
    suffix = model.suffix.lower()
    bf16 = cpu.native_bf16()
    if suffix == ".onnx":
        fp32, int8 = model_files(model)
        out = []
        engines = [e for e in ("onnxruntime", "openvino") if engine_available(e)]
        if fp32 is not None:
            out += [Candidate(e, "fp32", fp32) for e in engines]
            if bf16 and "openvino" in engines:
                out.append(Candidate("openvino", "bf16", fp32))
        if int8 is not None:
            out += [Candidate(e, "int8", int8) for e in engines]
        ref = next((c for c in out if c.precision == "fp32"), None)
        return out, ref
    out = [Candidate("torch", "fp32", model)]
    if suffix == ".safetensors" and bf16:
        out.append(Candidate("torch", "bf16", model))
    return out, out[0]


def load_candidate(c: Candidate, device: str = "cpu", threads: int | None = None, batch: int = 80) -> Engine:
    if c.engine == "openvino":
        from .openvino import OpenVinoEngine

        return OpenVinoEngine(c.path, device=device, precision=c.precision, threads=threads, batch=batch)
    if c.engine == "onnxruntime":
        from .onnx import OnnxEngine
        from .openvino import usable_cores

        return OnnxEngine(c.path, device=device, threads=threads or usable_cores(), precision=c.precision)
    if c.path.suffix.lower() == ".safetensors":
        from .checkpoint import CheckpointEngine

        return CheckpointEngine(c.path, device=device, precision=c.precision)
    from . import load_engine

    return load_engine(c.path, device=device)


# -- stored measurements -----------------------------------------------------

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


def _stamp(path: Path) -> dict:
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
        return float(m["crops_per_s"])  # written before speeds were kept per batch
    return None


def write_measurements(model: Path, new: list[dict]) -> Path:
    """Merge ``new`` into the stored ones (a newer measurement replaces the same key); atomic."""
    from ..fsutil import atomic_path

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
    raise AlexKitError(f"{model}: cannot store precision measurements beside it or in {cache_path(model).parent}")


def stored(model: Path, c: Candidate, ref: Candidate, machine: dict) -> dict | None:
    """The gate measurement of ``c`` on this machine class (any batch), if its files are unchanged since;
    ``speeds`` gathers every batch size it was timed at."""
    want_file, want_ref = _stamp(c.path), _stamp(ref.path)
    found = None
    speeds: dict[str, float] = {}
    for m in read_measurements(model):
        try:
            if (m["machine"]["key"] == machine["key"] and m["engine"] == c.engine and m["precision"] == c.precision
                    and m["file"] == want_file and m["reference_file"] == want_ref):
                found = m
                if isinstance(m.get("batch"), int) and isinstance(m.get("crops_per_s"), (int, float)):
                    speeds[str(m["batch"])] = float(m["crops_per_s"])
                if isinstance(m.get("speeds"), dict):
                    speeds.update({k: float(v) for k, v in m["speeds"].items() if isinstance(v, (int, float))})
        except (KeyError, TypeError, AttributeError):
            continue
    return None if found is None else {**found, "speeds": speeds}


def retime(engine: Engine, m: dict, batch: int, runs: int = 3) -> dict:
    """``m`` with the speed of ``engine`` at ``batch`` crops a call added (random pixels: speed does not
    depend on the content; the gate's numbers, which do, are kept)."""
    size = engine.meta.preprocess.crop
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    engine.logits_and_features(x.repeat(batch, 1, 1, 1))  # warm-up: the first call at a new shape compiles
    cps = round(_speed(engine, x, batch, runs), 2)
    return {**m, "batch": batch, "crops_per_s": cps, "speeds": {**m.get("speeds", {}), str(batch): cps}}


# -- measuring ---------------------------------------------------------------

def gate_photos(limit: int = GATE_PHOTOS) -> list[Path]:
    """Real photos for the gate: ``$ALEXNET_KIT_GATE_PHOTOS``, else the example photos (the checkout's, or
    those shipped in the package) plus the shared data's photos and ImageNet samples where present
    (spread over the classes)."""
    from ..images import find_images
    from ..paths import example_photos, optional_shared

    def folder(p: Path | None) -> list[Path]:
        return [Path(f) for f in find_images([p])] if p and p.is_dir() else []

    env = os.environ.get("ALEXNET_KIT_GATE_PHOTOS")
    if env:
        files = folder(Path(env))
        return files[:: max(1, len(files) // limit)][:limit]
    files = example_photos() + folder(optional_shared("photos"))
    samples = folder(optional_shared("imagenet-samples"))
    room = max(0, limit - len(files))
    if samples and room:
        files += samples[:: max(1, len(samples) // room)][:room]
    return files[:limit]


def _crops(meta, photos: Sequence[Path]) -> torch.Tensor:
    from ..errors import ImageError

    loaded = []
    for p in photos:
        try:
            loaded.append(meta.preprocess.load(p))
        except ImageError:
            continue
    if not loaded:
        return torch.empty(0)
    return meta.preprocess.crops(np.stack(loaded), 1)


def _outputs(engine: Engine, x: torch.Tensor, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    parts = [engine.logits_and_features(x[i : i + batch]) for i in range(0, len(x), batch)]
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


def _speed(engine: Engine, x: torch.Tensor, batch: int, runs: int = 3) -> float:
    """crops/s at ``batch`` crops a call: the median of ``runs`` calls (after the gate pass warmed it up)."""
    xb = x.repeat((batch + len(x) - 1) // len(x), 1, 1, 1)[:batch].contiguous()
    rates = []
    for _ in range(runs):
        t = time.perf_counter()
        engine.logits_and_features(xb)
        rates.append(batch / (time.perf_counter() - t))
    return statistics.median(rates)


def measure(model: Path, todo: list[Candidate], ref: Candidate, *, device: str = "cpu", threads: int | None = None,
            batch: int = 80, photos: Sequence[Path] | None = None,
            log: Callable[[str], None] | None = None) -> dict[Candidate, tuple[dict, Engine]]:
    """Measure ``todo`` against ``ref`` on real photos; store and return {candidate: (measurement, engine)}."""
    from tqdm import tqdm

    photos = list(photos) if photos is not None else gate_photos()
    machine = cpu.machine_class()
    ref_engine = load_candidate(ref, device, threads, batch)
    x = _crops(ref_engine.meta, photos)
    if len(x) == 0:
        raise AlexKitError(f"{model}: no real photos to verify {', '.join(c.name for c in todo)} with "
                           "(set ALEXNET_KIT_GATE_PHOTOS to a folder of photos, or choose --precision fp32)")
    if log:
        log(f"measuring {', '.join(c.name for c in todo)} against {ref.name} on {len(x)} photos, once for "
            f"this model on this CPU ({machine['cpu']}); stored in {sidecar_path(model).name}")
    ref_logits, ref_feats = _outputs(ref_engine, x, batch)
    ref_top1 = ref_logits.argmax(1)
    out: dict[Candidate, tuple[dict, Engine]] = {}
    bar = tqdm(todo, desc="engines", unit="path", file=sys.stderr, disable=None if log else True, leave=False)
    for c in bar:
        engine = ref_engine if c == ref else load_candidate(c, device, threads, batch)
        logits, feats = _outputs(engine, x, batch) if c != ref else (ref_logits, ref_feats)
        cos = torch.nn.functional.cosine_similarity(feats.double(), ref_feats.double(), dim=1, eps=1e-12)
        m = {
            "engine": c.engine, "precision": c.precision, "runs": engine.description,
            "runs_precision": engine.precision, "fingerprint": engine.fingerprint,
            "file": _stamp(c.path), "reference": ref.name, "reference_file": _stamp(ref.path),
            "machine": machine, "photos": len(x), "crop": "centre",
            "top1_agreement": float((logits.argmax(1) == ref_top1).double().mean()),
            "fc7_cosine": float(cos.mean()), "fc7_cosine_min": float(cos.min()),
            "max_abs_logit_diff": float((logits - ref_logits).abs().max()),
            "batch": batch, "threads": getattr(engine, "threads", threads),
            "crops_per_s": round(_speed(engine, x, batch), 2),
            "measured_at": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        m["speeds"] = {str(batch): m["crops_per_s"]}
        out[c] = (m, engine)
    bar.close()
    write_measurements(model, [m for m, _ in out.values()])
    return out


# -- choosing --------------------------------------------------------------

def _refuse(model: Path, msg: str) -> AlexKitError:
    return CheckpointError(model, msg)


def open_engine(model: str | os.PathLike, engine: str = "auto", precision: str = "auto", *, device: str = "cpu",
                batch: int = 80, threads: int | None = None, gate: Gate | None = None,
                photos: Sequence[Path] | None = None, log: Callable[[str], None] | None = None,
                allow: Sequence[str] | None = None) -> Engine:
    """The engine to serve ``model`` with; ``engine.choice`` says which and why.

    ``batch``: crops per forward call (sets the OpenVINO hint and the speed
    measured). ``log``: where to say that a one-time measurement is running.
    ``allow``: the precisions ``auto`` may pick (e.g. no int8 when the
    features must match an index built in fp32: int8 features are another model's).
    """
    model = Path(model)
    gate = gate or Gate.from_env()
    if engine not in ENGINES + ("auto",):
        raise AlexKitError(f"unknown engine {engine!r} (expected one of: {', '.join(ENGINES)}, auto)")
    if precision not in PRECISIONS + ("auto",):
        raise AlexKitError(f"unknown precision {precision!r} (expected one of: {', '.join(PRECISIONS)}, auto)")
    if engine != "auto" and not engine_available(engine):
        raise AlexKitError(f"--engine {engine}: {engine} is not installed here (pip install {engine}), or use --engine auto")
    if precision == "bf16" and not cpu.native_bf16():
        raise AlexKitError(f"--precision bf16 refused: this CPU ({cpu.cpuinfo()[0]}) has neither amx_bf16 nor "
                           "avx512_bf16 in /proc/cpuinfo, so bf16 would be emulated and slow; use fp32, int8 or auto")
    if torch.device(device).type != "cpu":
        from . import load_engine

        if precision not in ("auto", "fp32"):
            raise AlexKitError(f"--precision {precision}: precision choice is for the CPU; on {device} the file runs as exported")
        runs = "onnxruntime" if model.suffix.lower() == ".onnx" else "torch"
        if engine not in ("auto", runs):
            raise AlexKitError(f"--engine {engine}: on {device} {model.name} runs on {runs} (engine choice is for the "
                               f"CPU); use --engine {runs} or auto, or --device cpu")
        e = load_engine(model, device=device)
        e.choice = f"{device}: {e.description}"
        return e
    every, ref = candidates(model)
    if precision == "auto" and model.name.lower().endswith(".int8.onnx"):
        precision = "int8"  # the user named the int8 export: its fp32 sibling is only the reference
    chosen = [c for c in every if engine in ("auto", c.engine) and precision in ("auto", c.precision)
              and (precision != "auto" or allow is None or c.precision in allow)]
    if not chosen:
        what = ", ".join(c.name for c in every) or "nothing (onnxruntime and openvino are both missing)"
        hint = ""
        if precision == "int8" and model.suffix.lower() == ".onnx" and model_files(model)[1] is None:
            hint = f" (int8 needs the int8 export beside it: {model_files(model)[0].stem}.int8.onnx, from alexnet-kit export --int8)"
        elif precision == "int8":
            hint = " (int8 needs an ONNX model and its int8 export)"
        elif engine == "torch" and model.suffix.lower() == ".onnx":
            hint = " (torch runs checkpoints, .ts and .pt2; an .onnx runs on onnxruntime or openvino)"
        elif engine != "auto" and model.suffix.lower() != ".onnx":
            hint = " (onnxruntime and openvino run .onnx artifacts: alexnet-kit export --format onnx)"
        raise _refuse(model, f"cannot run as {engine} {precision} here{hint}; what can: {what}")
    if ref is None or (len(chosen) == 1 and chosen[0].precision == "fp32"):
        c = chosen[0]
        e = load_candidate(c, device, threads, batch)
        if c.precision == "fp32":
            e.choice = f"{c.name} (the reference precision){' : the only path here' if len(every) == 1 else ''}"
        else:
            e.choice = (f"{c.name}: no fp32 model beside it ({model.name[: -len('.int8.onnx')]}.onnx) to verify it against "
                        "on this machine; export checked it when it was written")
        e.path = c.path
        return e
    machine = cpu.machine_class()
    have = {c: stored(model, c, ref, machine) for c in chosen}
    todo = [c for c in chosen if have[c] is None]
    engines: dict[Candidate, Engine] = {}
    if todo and photos is None:
        photos = gate_photos()
        if not photos and precision in ("auto", "fp32") and ref in chosen:
            # nothing real to verify with (an installed package, no data): the reference, and say why
            e = load_candidate(ref, device, threads, batch)
            e.choice = (f"{ref.name}: no real photos here to verify other paths with "
                        "(set ALEXNET_KIT_GATE_PHOTOS to a folder of photos to let auto measure them)")
            e.path = ref.path
            return e
    if todo:
        for c, (m, e) in measure(model, todo, ref, device=device, threads=threads, batch=batch, photos=photos, log=log).items():
            have[c], engines[c] = m, e
    passing = [c for c in chosen if c == ref or gate.failure(have[c]) is None]
    if not passing:
        c = chosen[0] if len(chosen) == 1 else max(chosen, key=lambda c: have[c]["top1_agreement"])
        raise _refuse(model, f"{c.name if len(chosen) == 1 else ' / '.join(x.name for x in chosen)} refused by the "
                             f"precision gate on this CPU: {gate.failure(have[c])} on {have[c]['photos']} real photos; "
                             "use --precision fp32 (or auto)")
    untimed = [c for c in passing if speed_at(have[c], batch) is None] if len(passing) > 1 else []
    if untimed:
        if log:
            log(f"timing {', '.join(c.name for c in untimed)} at {batch} crops a call (a few calls; the precision "
                "gate's verdict for this model and CPU is already stored)")
        for c in untimed:
            engines[c] = engines.get(c) or load_candidate(c, device, threads, batch)
            have[c] = retime(engines[c], have[c], batch)
        write_measurements(model, [have[c] for c in untimed])
    for c in chosen:  # the speed at this batch where it was timed (only one passing candidate needs none)
        s = speed_at(have[c], batch)
        if s is not None:
            have[c] = {**have[c], "batch": batch, "crops_per_s": s}
    best = max(passing, key=lambda c: have[c]["crops_per_s"])
    e = engines.pop(best, None)
    engines.clear()  # the losers' sessions go now, not at the end of the run
    e = e or load_candidate(best, device, threads, batch)
    m = have[best]
    others = ", ".join(c.name + ("" if speed_at(have[c], batch) is None else f" {have[c]['crops_per_s']:.0f}")
                       + ("" if c in passing else " (fails the gate)") for c in chosen if c != best)
    e.choice = (f"{best.name}, {m['crops_per_s']:.0f} crops/s at {m['batch']} a call"
                + (f" (vs {others})" if others else "")
                + (f"; top-1 agreement with fp32 {m['top1_agreement']:.1%}, fc7 cosine {m['fc7_cosine']:.4f} "
                   f"on {m['photos']} photos" if best != ref else "")
                + f"; measured {m['measured_at'][:10]}")
    e.path = best.path
    return e


def stderr_log(message: str) -> None:
    """How the CLI and the demo tell the user what the choice of engine is doing."""
    print(f"alexnet-kit: {message}", file=sys.stderr, flush=True)


def serving_engine(path, device: str = "cpu", engine: str | None = None, precision: str | None = None,
                   batch: int = 80, **options) -> Engine:
    """The file's own engine (both None), or the one :func:`open_engine` chooses and verifies."""
    if engine is None and precision is None:
        from . import load_engine

        return load_engine(path, device=device)
    # a one-time measurement pauses for tens of seconds: say so on stderr unless the caller chose where
    if options.get("log") is None:
        options["log"] = stderr_log
    return open_engine(path, engine or "auto", precision or "auto", device=device, batch=batch, **options)


def describe_measurements(model: str | os.PathLike, gate: Gate | None = None) -> list[str]:
    """One line per stored measurement, this machine class first, for ``alexnet-kit info``."""
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
