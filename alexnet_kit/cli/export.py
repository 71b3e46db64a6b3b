"""``alexnet-kit export``: a checkpoint as a verified ONNX / TorchScript / torch.export artifact."""
from __future__ import annotations

import argparse
import json

from ..engines.precision import EXPORT_INT8_MIN_TOP1
from ..resolve import resolve_model


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="export a checkpoint to ONNX, TorchScript or torch.export, verified on real photos",
        description="Export a checkpoint as one self-contained file that computes the logits and the fc7 "
        "features in one pass and carries the checkpoint's metadata. The artifact is reloaded with its own "
        "runtime and compared with the PyTorch model on real photos before it is written; when parity is "
        "off nothing is written and the exit status is 2.",
    )
    p.add_argument("checkpoint", help="checkpoint (.safetensors)")
    p.add_argument("-f", "--format", choices=["onnx", "torchscript", "pt2"], default="onnx", help="artifact format (default onnx)")
    p.add_argument("-o", "--out", help="output path (default: beside the checkpoint, .onnx / .int8.onnx / .ts / .pt2)")
    p.add_argument("--int8", action="store_true", help="ONNX only: int8 for CPU serving (onnxruntime quantisation)")
    p.add_argument("--int8-mode", choices=["static", "dynamic"], default="static",
                   help="static: activations calibrated on real photos (default, faster); dynamic: no calibration")
    p.add_argument("--calibration", nargs="+", metavar="PHOTOS", help="photos or folders to calibrate int8 on (default: the verification photos)")
    p.add_argument("--photos", nargs="+", metavar="PHOTOS", help="photos or folders to verify on (default: the example photos, shipped with the package, and the shared data's photos/ where present)")
    p.add_argument("--min-top1", type=float, default=EXPORT_INT8_MIN_TOP1,
                   help=f"int8: least top-1 agreement with fp32 on the verification photos (default {EXPORT_INT8_MIN_TOP1}; "
                   "serving holds int8 to a stricter gate on each CPU)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..export import export_checkpoint  # defers the export stage (torch, onnx) to this command

    report = export_checkpoint(
        resolve_model(args.checkpoint), args.format, args.out, int8=args.int8, int8_mode=args.int8_mode,
        photos=args.photos, calibration=args.calibration, min_top1=args.min_top1,
    )
    if args.json:
        print(json.dumps({"path": str(report.path), "format": report.format, "precision": report.precision,
                          "fingerprint": report.fingerprint, "bytes": report.bytes, "seconds": round(report.seconds, 2),
                          "parity": report.parity.to_dict()}, indent=2))
    else:
        print(report.summary())
    return 0
