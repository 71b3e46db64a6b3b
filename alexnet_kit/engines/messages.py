"""Every sentence the engine choice says: its reasons, refusals and progress lines, in one place."""
from __future__ import annotations

import sys
from pathlib import Path

from .precision import Precision


def stderr_log(message: str) -> None:
    """How the CLI and the demo tell the user what the choice of engine is doing."""
    print(f"alexnet-kit: {message}", file=sys.stderr, flush=True)


# -- a wish that cannot be met (WishError) ------------------------------------

def unknown(kind: str, value: str, known) -> str:
    return f"unknown {kind} {value!r} (expected one of: {', '.join(known)}, auto)"


def not_installed(engine: str) -> str:
    return f"--engine {engine}: {engine} is not installed here (pip install {engine}), or use --engine auto"


def bf16_not_native(cpu_name: str) -> str:
    return (f"--precision bf16 refused: this CPU ({cpu_name}) has neither amx_bf16 nor avx512_bf16 in /proc/cpuinfo, "
            "so bf16 would be emulated and slow; use fp32, int8 or auto")


def precision_off_cpu(precision: str, device: str) -> str:
    return f"--precision {precision}: precision choice is for the CPU; on {device} the file runs as exported"


def engine_off_cpu(engine: str, device: str, model: Path, runs: str) -> str:
    return (f"--engine {engine}: on {device} {model.name} runs on {runs} (engine choice is for the CPU); "
            f"use --engine {runs} or auto, or --device cpu")


# -- no path, or the gate says no (SelectionRefused) ----------------------------

def cannot_run(model: Path, engine: str, precision: str, every: list, int8_file: Path | None, fp32_file: Path | None) -> str:
    what = ", ".join(c.name for c in every) or "nothing (onnxruntime and openvino are both missing)"
    onnx = model.suffix.lower() == ".onnx"
    hint = ""
    if precision == Precision.INT8 and onnx and int8_file is None:
        hint = (f" (int8 needs the int8 export beside it: {fp32_file.stem}.int8.onnx, "
                "from alexnet-kit export --int8)")
    elif precision == Precision.INT8:
        hint = " (int8 needs an ONNX model and its int8 export)"
    elif engine == "torch" and onnx:
        hint = " (torch runs checkpoints, .ts and .pt2; an .onnx runs on onnxruntime or openvino)"
    elif engine != "auto" and not onnx:
        hint = " (onnxruntime and openvino run .onnx artifacts: alexnet-kit export --format onnx)"
    return f"cannot run as {engine} {precision} here{hint}; what can: {what}"


def gate_refusal(names: str, failure: str, photos: int) -> str:
    return (f"{names} refused by the precision gate on this CPU: {failure} on {photos} real photos; "
            "use --precision fp32 (or auto)")


def no_photos(model: Path, names: str) -> str:
    return (f"{model}: no real photos to verify {names} with "
            "(set ALEXNET_KIT_GATE_PHOTOS to a folder of photos, or choose --precision fp32)")


# -- why this path (Selection.reason) --------------------------------------------

def reference(name: str, only: bool) -> str:
    return f"{name} (the reference precision){' : the only path here' if only else ''}"


def unverified_int8(name: str, model: Path) -> str:
    return (f"{name}: no fp32 model beside it ({model.name[: -len('.int8.onnx')]}.onnx) to verify it against "
            "on this machine; export checked it when it was written")


def no_photos_reference(name: str) -> str:
    return (f"{name}: no real photos here to verify other paths with "
            "(set ALEXNET_KIT_GATE_PHOTOS to a folder of photos to let auto measure them)")


def not_measured_reference(name: str) -> str:
    return (f"{name} (the reference precision; the other paths are not measured on this CPU yet: "
            "engine/precision 'auto' measures them)")


def measured(best: str, m: dict, others: str, is_reference: bool) -> str:
    return (f"{best}, {m['crops_per_s']:.0f} crops/s at {m['batch']} a call"
            + (f" (vs {others})" if others else "")
            + (f"; top-1 agreement with fp32 {m['top1_agreement']:.1%}, fc7 cosine {m['fc7_cosine']:.4f} "
               f"on {m['photos']} photos" if not is_reference else "")
            + f"; measured {m['measured_at'][:10]}")


# -- progress (the log) ------------------------------------------------------------

def measuring(names: str, ref: str, photos: int, cpu_name: str, sidecar: str) -> str:
    return (f"measuring {names} against {ref} on {photos} photos, once for this model on this CPU ({cpu_name}); "
            f"stored in {sidecar}")


def timing(names: str, batch: int) -> str:
    return (f"timing {names} at {batch} crops a call (a few calls; the precision gate's verdict for this model "
            "and CPU is already stored)")


def cannot_store(model: Path, cache: Path) -> str:
    return f"{model}: cannot store precision measurements beside it or in {cache}"


def unmeasured(name: str) -> str:
    return (f"{name}: not verified on this CPU yet (engine/precision 'auto' measures it); "
            "export checked it when it was written")


def off_cpu_reason(device: str, runs: str) -> str:
    return f"{device}: {runs}, the file as exported (engine and precision choice is for the CPU)"
