"""Every sentence the engine choice says: its reasons, refusals and progress lines, in one place.

Plain sentences are templates in :data:`TEXT`, filled by :func:`say`; the
few that depend on more than a value or two are functions below it.
"""
from __future__ import annotations

import sys
from pathlib import Path

from .precision import Precision

TEXT = {
    # a wish that cannot be met (WishError)
    "not_installed": "--engine {engine}: {engine} is not installed here (pip install {engine}), or use --engine auto",
    "bf16_not_native": ("--precision bf16 refused: this CPU ({cpu}) has neither amx_bf16 nor avx512_bf16 in "
                        "/proc/cpuinfo, so bf16 would be emulated and slow; use fp32, int8 or auto"),
    "precision_off_cpu": "--precision {precision}: precision choice is for the CPU; on {device} the file runs as exported",
    "engine_off_cpu": ("--engine {engine}: on {device} {name} runs on {runs} (engine choice is for the CPU); "
                       "use --engine {runs} or auto, or --device cpu"),
    # the gate says no, or cannot be asked (GateRefused, NoReferencePhotos)
    "gate_refusal": ("{names} refused by the precision gate on this CPU: {failure} on {photos} real photos; "
                     "use --precision fp32 (or auto)"),
    "no_photos": ("{model}: no real photos to verify {names} with "
                  "(set ALEXNET_KIT_GATE_PHOTOS to a folder of photos, or choose --precision fp32)"),
    "cannot_store": "{model}: cannot store precision measurements beside it or in {cache}",
    # why this path (Selection.reason)
    "no_photos_reference": ("{name}: no real photos here to verify other paths with "
                            "(set ALEXNET_KIT_GATE_PHOTOS to a folder of photos to let auto measure them)"),
    "not_measured_reference": ("{name} (the reference precision; the other paths are not measured on this CPU yet: "
                               "engine/precision 'auto' measures them)"),
    "unmeasured": ("{name}: not verified on this CPU yet (engine/precision 'auto' measures it); "
                   "export checked it when it was written"),
    "unverified_int8": ("{name}: no fp32 model beside it ({stem}.onnx) to verify it against on this machine; "
                        "export checked it when it was written"),
    "off_cpu": "{device}: {runs}, the file as exported (engine and precision choice is for the CPU)",
    # progress (the log)
    "measuring": ("measuring {names} against {ref} on {photos} photos, once for this model on this CPU ({cpu}); "
                  "stored in {sidecar}"),
    "timing": ("timing {names} at {batch} crops a call (a few calls; the precision gate's verdict for this model "
               "and CPU is already stored)"),
}


def say(key: str, **values) -> str:
    """The sentence ``key`` of :data:`TEXT` with ``values`` filled in."""
    return TEXT[key].format(**values)


def stderr_log(message: str) -> None:
    """How the CLI and the demo tell the user what the choice of engine is doing."""
    print(f"alexnet-kit: {message}", file=sys.stderr, flush=True)


def unknown(kind: str, value: str, known) -> str:
    return f"unknown {kind} {value!r} (expected one of: {', '.join(known)}, auto)"


def cannot_run(model: Path, engine: str, precision: str, every: list, int8_file: Path | None, fp32_file: Path | None) -> str:
    """No candidate here meets the wish: what was asked, a hint for the usual mistake, and what can run."""
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


def reference(name: str, only: bool) -> str:
    return f"{name} (the reference precision){' : the only path here' if only else ''}"


def measured(best: str, m: dict, others: str, is_reference: bool) -> str:
    """The reason for a measured choice: its speed, the others', its agreement with fp32 and when."""
    return (f"{best}, {m['crops_per_s']:.0f} crops/s at {m['batch']} a call"
            + (f" (vs {others})" if others else "")
            + (f"; top-1 agreement with fp32 {m['top1_agreement']:.1%}, fc7 cosine {m['fc7_cosine']:.4f} "
               f"on {m['photos']} photos" if not is_reference else "")
            + f"; measured {m['measured_at'][:10]}")
