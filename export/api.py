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
from alexnet_kit.engines.base import run_batches
from alexnet_kit.engines.loaders import load_engine
from alexnet_kit.engines.precision import EXPORT_INT8_MIN_TOP1, Precision
from alexnet_kit.errors import AlexKitError
from alexnet_kit.fsutil import atomic_path

from .onnx import OPSET, export_onnx
from .pt2 import export_pt2
from .quantize import quantize
from .torchscript import export_torchscript
from .verify import ParityReport, compare, photos_for

# format -> artifact suffix
FORMATS = {"onnx": ".onnx", "torchscript": ".ts", "pt2": ".pt2"}


class ExportError(AlexKitError):
    """The artifact did not reproduce the model: nothing was written."""


@dataclass
class ExportReport:
    """What ``alexnet-kit export`` wrote and how it verified it."""

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


def _write(fmt: str, model, envelope: Envelope, tmp: Path, int8_mode: str | None, calibration) -> None:
    """Write the artifact of ``fmt`` to ``tmp``: int8 quantises an fp32 ONNX export on ``calibration`` crops."""
    if fmt == "torchscript":
        export_torchscript(model, envelope, tmp)
    elif fmt == "pt2":
        export_pt2(model, envelope, tmp)
    elif int8_mode is None:
        export_onnx(model, envelope, tmp)
    else:
        source = envelope.source_fingerprint
        fp32 = Envelope(envelope.meta, source, source, Precision.FP32.label(), envelope.exported_with)
        with tempfile.TemporaryDirectory(prefix="alexnet-kit-export-") as work:
            export_onnx(model, fp32, Path(work) / "fp32.onnx")
            quantize(Path(work) / "fp32.onnx", tmp, envelope, int8_mode, calibration, Path(work))


def _check_request(fmt: str, int8: bool) -> None:
    if fmt not in FORMATS:
        raise AlexKitError(f"unknown export format {fmt!r} (expected one of: {', '.join(FORMATS)})")
    if int8 and fmt != "onnx":
        raise AlexKitError("--int8 is an onnxruntime quantisation: use it with --format onnx")


def export_checkpoint(
    checkpoint: str | os.PathLike,
    fmt: str = "onnx",
    out: str | os.PathLike | None = None,
    int8: bool = False,
    int8_mode: str = "static",
    photos: Sequence[str | os.PathLike] | None = None,
    calibration: Sequence[str | os.PathLike] | None = None,
    crops: int = 10,
    min_top1: float = EXPORT_INT8_MIN_TOP1,
) -> ExportReport:
    """Export ``checkpoint`` as ``fmt``; verify on ``photos`` (default: the reference photos).

    Raises :class:`ExportError` (and writes nothing) when the artifact does not
    reproduce the model.
    """
    _check_request(fmt, int8)
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
    if fmt == "onnx":
        exported_with["opset"] = OPSET
    precision = Precision.INT8.label(int8_mode) if int8 else Precision.FP32.label()
    fingerprint = f"{source}-{precision}" if int8 else source  # int8 features are another model's
    cal = None
    if int8:
        cal = meta.preprocess.crops(photos_for(calibration, meta.preprocess.resize, meta.preprocess.resize_mode)
                                    if calibration else test_photos, 1)
    with atomic_path(out) as published, _suffixed(published, FORMATS[fmt]) as tmp:
        _write(fmt, model, Envelope(meta, fingerprint, source, precision, exported_with), tmp,
               int8_mode if int8 else None, cal)
        engine = load_engine(tmp)  # the artifact read back by its own runtime, chosen by suffix as serving does
        parity = compare(engine, model, meta.preprocess, test_photos, crops, exact=not int8, min_top1=min_top1,
                         reference=reference)
        del engine
        if not parity.passed:
            raise ExportError(f"{out}: export does not reproduce the model, nothing written: {parity.summary()}")
        size = tmp.stat().st_size
        os.replace(tmp, published)
    return ExportReport(out, fmt, precision, fingerprint, size, time.perf_counter() - start, parity)
