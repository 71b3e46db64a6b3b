"""``export_checkpoint``: export, reload, compare, and only then publish."""
from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from alexnet_kit.checkpoint import load_model, read_meta
from alexnet_kit.engines.artifact import Envelope
from alexnet_kit.errors import AlexKitError
from alexnet_kit.fsutil import atomic_path

from .verify import ParityReport, compare, photos_for, run_batches

# format -> artifact suffix
FORMATS = {"onnx": ".onnx", "torchscript": ".ts", "pt2": ".pt2"}


class ExportError(AlexKitError):
    """The artifact did not reproduce the model: nothing was written."""


@dataclass
class ExportReport:
    path: Path
    format: str
    precision: str
    fingerprint: str
    bytes: int
    seconds: float
    parity: ParityReport

    def summary(self) -> str:
        return (f"wrote {self.path} ({self.format}, {self.precision}, {self.bytes / 2**20:.1f} MiB, "
                f"{self.seconds:.1f} s); fingerprint {self.fingerprint[:16]}...\nverification {self.parity.summary()}")


def default_output(checkpoint: str | os.PathLike, fmt: str, int8: bool = False) -> Path:
    p = Path(checkpoint)
    return p.with_name(p.stem + (".int8" if int8 else "") + FORMATS[fmt])


@contextlib.contextmanager
def _suffixed(tmp: Path, suffix: str):
    """A scratch path beside ``tmp`` that keeps the format's suffix (torch.export insists on .pt2)."""
    work = tmp.with_name(tmp.name + suffix)
    try:
        yield work
    finally:
        work.unlink(missing_ok=True)


def _engine(fmt: str, path: Path):
    if fmt == "onnx":
        from alexnet_kit.engines.onnx import OnnxEngine

        return OnnxEngine(path)
    from alexnet_kit.engines.torch_archive import ExportedProgramEngine, TorchScriptEngine

    return TorchScriptEngine(path) if fmt == "torchscript" else ExportedProgramEngine(path)


def export_checkpoint(
    checkpoint: str | os.PathLike,
    fmt: str = "onnx",
    out: str | os.PathLike | None = None,
    int8: bool = False,
    int8_mode: str = "static",
    photos: Sequence[str | os.PathLike] | None = None,
    calibration: Sequence[str | os.PathLike] | None = None,
    crops: int = 10,
    min_top1: float = 0.9,
) -> ExportReport:
    """Export ``checkpoint`` as ``fmt``; verify on ``photos`` (default: the example photos).

    Raises :class:`ExportError` (and writes nothing) when the artifact does not
    reproduce the model.
    """
    if fmt not in FORMATS:
        raise AlexKitError(f"unknown export format {fmt!r} (expected one of: {', '.join(FORMATS)})")
    if int8 and fmt != "onnx":
        raise AlexKitError("--int8 is an onnxruntime quantisation: use it with --format onnx")
    start = time.perf_counter()
    # the ONNX exporter logs one warning per torchvision operator it cannot register
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
    model, meta = load_model(checkpoint)
    source = read_meta(checkpoint)[1]["weights_sha256"]
    out = Path(out) if out else default_output(checkpoint, fmt, int8)
    if out.suffix.lower() != FORMATS[fmt]:
        raise AlexKitError(f"{out}: a {fmt} artifact must end in {FORMATS[fmt]} (the runtime picks the engine by suffix)")
    test_photos = photos_for(photos, meta.preprocess.resize, meta.preprocess.resize_mode)
    reference = run_batches(model.logits_and_features, meta.preprocess.crops(test_photos, crops))
    exported_with = {"torch": torch.__version__, "format": fmt, "checkpoint": Path(checkpoint).name}
    precision = "fp32"
    with atomic_path(out) as published, _suffixed(published, FORMATS[fmt]) as tmp:
        if fmt == "onnx":
            from .onnx import OPSET, export_onnx

            exported_with["opset"] = OPSET
            if int8:
                from .quantize import quantize

                precision = f"int8-{int8_mode}"
                envelope = Envelope(meta, f"{source}-{precision}", source, precision, exported_with)
                with tempfile.TemporaryDirectory(prefix="alexnet-kit-export-") as work:
                    fp32 = Path(work) / "fp32.onnx"
                    export_onnx(model, Envelope(meta, source, source, "fp32", exported_with), fp32)
                    cal = photos_for(calibration, meta.preprocess.resize, meta.preprocess.resize_mode) if calibration else test_photos
                    quantize(fp32, tmp, envelope, int8_mode, meta.preprocess.crops(cal, 1), Path(work))
            else:
                envelope = Envelope(meta, source, source, precision, exported_with)
                export_onnx(model, envelope, tmp)
        elif fmt == "torchscript":
            from .torchscript import export_torchscript

            export_torchscript(model, Envelope(meta, source, source, precision, exported_with), tmp)
        else:
            from .pt2 import export_pt2

            export_pt2(model, Envelope(meta, source, source, precision, exported_with), tmp)
        engine = _engine(fmt, tmp)
        parity = compare(engine, model, meta.preprocess, test_photos, crops, exact=not int8, min_top1=min_top1, reference=reference)
        del engine
        if not parity.passed:
            raise ExportError(f"{out}: export does not reproduce the model, nothing written: {parity.summary()}")
        size = tmp.stat().st_size
        os.replace(tmp, published)
    fingerprint = source if not int8 else f"{source}-{precision}"
    return ExportReport(out, fmt, precision, fingerprint, size, time.perf_counter() - start, parity)
