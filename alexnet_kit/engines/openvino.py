"""ONNX artifacts through OpenVINO's CPU plugin (``openvino`` on PyPI).

OpenVINO compiles the ``.onnx`` file as exported (no conversion step, the
envelope is read back from the ONNX metadata). Where the CPU has native bf16
(AMX, or AVX-512 BF16) its CPU plugin may run bf16 *without being asked*, so
the engine always sets ``INFERENCE_PRECISION_HINT`` and reports the precision
the compiled model says it runs, never the one requested.

Threads: as many as the cores this process may use (``sched_getaffinity``:
a container or ``taskset`` limit is respected), pinned. Hint: LATENCY (one
stream using every thread) for small batches; THROUGHPUT (one stream per
core group) for large ones, with the batch split across the streams'
requests, which keeps every core busy where one big request would leave
some idle between layers.
"""
from __future__ import annotations

import os
import threading

import numpy as np
import torch

from ..errors import CheckpointError, existing_file, first_line
from .artifact import INPUT, KEY, OUTPUTS, Envelope
from .base import Engine
from .cpu import usable_cores
from .errors import EngineMissing, PrecisionMismatch
from .precision import Precision

#: crops per call from which the THROUGHPUT hint (several streams) pays
THROUGHPUT_FROM = 32
#: the precisions OpenVINO is asked to compute a float artifact in, as its hint names them
HINTS = {Precision.FP32: "f32", Precision.BF16: "bf16"}

__all__ = ["OpenVinoEngine", "THROUGHPUT_FROM", "usable_cores"]


def _read(path, device: str):
    """(openvino module, Core, the read model, its envelope); one-line errors for what is not runnable."""
    if torch.device(device).type != "cpu":
        raise CheckpointError(path, f"the OpenVINO engine runs on the CPU only (asked for {device})")
    try:
        import openvino as ov  # defers openvino, an optional dependency
    except ImportError:
        raise EngineMissing(path, "the OpenVINO engine needs openvino: pip install openvino "
                                  "(or use --engine onnxruntime)") from None
    core = ov.Core()
    try:
        model = core.read_model(str(path))
    except Exception as e:  # OpenVINO raises RuntimeError subclasses with multi-line text
        raise CheckpointError(path, f"not a loadable ONNX model, or truncated ({first_line(e)})") from None
    text = model.get_rt_info(["framework", KEY]).astype(str) if model.has_rt_info(["framework", KEY]) else None
    env = Envelope.parse(path, text, "ONNX model")
    inputs = [i.get_any_name() for i in model.inputs]
    outputs = [o.get_any_name() for o in model.outputs]
    if inputs != [INPUT] or outputs != list(OUTPUTS):
        raise CheckpointError(path, f"an ONNX model with inputs {inputs} and outputs {outputs}, expected [{INPUT!r}] and {list(OUTPUTS)}")
    return ov, core, model, env


def _wanted_precision(path, held: Precision, label: str, asked: Precision | str | None) -> Precision:
    """What to compute in: an int8 artifact runs int8 whatever is asked; a float one fp32 or bf16."""
    if held is Precision.INT8:
        if asked not in (None, Precision.INT8):
            raise PrecisionMismatch(path, f"an {label} artifact, asked to run it as {asked}: pass the fp32 .onnx")
        return Precision.INT8
    if asked == Precision.INT8:
        raise PrecisionMismatch(path, "an fp32 artifact: int8 needs the int8 export (alexnet-kit export --int8)")
    if asked is not None and asked not in HINTS:
        raise PrecisionMismatch(path, f"OpenVINO runs this artifact in fp32 or bf16, not {str(asked)!r}")
    return Precision(asked or Precision.FP32)


class OpenVinoEngine(Engine):
    def __init__(self, path: str | os.PathLike, device: str = "cpu", precision: Precision | str | None = None,
                 threads: int | None = None, batch: int = 80):
        path = existing_file(path, CheckpointError, "a model file")
        self.path = path
        ov, core, model, env = _read(path, device)
        held = Precision.parse(env.precision)
        want = _wanted_precision(path, held, env.precision, precision)
        self.threads = int(threads or usable_cores())
        self.hint = "THROUGHPUT" if batch >= THROUGHPUT_FROM and self.threads > 1 else "LATENCY"
        config = {
            # the quantised operators run int8 whatever the hint; the few float ones between them stay fp32
            "INFERENCE_PRECISION_HINT": HINTS[Precision.FP32 if want is Precision.INT8 else want],
            "PERFORMANCE_HINT": self.hint,
            "INFERENCE_NUM_THREADS": self.threads,
            "ENABLE_CPU_PINNING": True,
        }
        try:
            self.compiled = core.compile_model(model, "CPU", config)
        except Exception as e:
            raise CheckpointError(path, f"OpenVINO cannot compile it ({first_line(e)})") from None
        self.meta, self.fingerprint, self.envelope = env.meta, env.fingerprint, env
        # what actually runs, read back from the compiled model
        ran = str(self.compiled.get_property("INFERENCE_PRECISION_HINT")).lower()
        self.runs_in = Precision.BF16 if "bf16" in ran or "bfloat16" in ran else Precision.FP32
        self.precision = Precision.INT8 if want is Precision.INT8 else self.runs_in
        if self.precision is not want:
            raise PrecisionMismatch(path, f"OpenVINO was asked for {want} but compiled {ran}")
        self._start_requests()
        kind = "int8 (QDQ artifact, float parts fp32)" if want is Precision.INT8 else str(self.runs_in)
        self.description = (f"openvino {ov.__version__.split('-')[0]} {self._devices} ({kind}, {self.threads} threads "
                            f"pinned, {self.hint.lower()} hint, {self.streams} stream{'s' if self.streams > 1 else ''})")

    def _start_requests(self) -> None:
        self.streams = int(self.compiled.get_property("NUM_STREAMS"))
        n = max(1, int(self.compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")))
        self.requests = [self.compiled.create_infer_request() for _ in range(n)]
        self._lock = threading.Lock()  # an infer request serves one caller at a time (the demo has several)
        self._devices = ",".join(self.compiled.get_property("EXECUTION_DEVICES"))

    def _run(self, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        with self._lock:
            return self._infer(x)

    def _infer(self, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        x = np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)
        n = min(len(self.requests), len(x))
        if n <= 1:
            r = self.requests[0]
            r.infer({INPUT: x})
            return tuple(r.get_tensor(name).data.copy() for name in OUTPUTS)  # type: ignore[return-value]
        parts = np.array_split(x, n)
        for r, p in zip(self.requests, parts):
            r.start_async({INPUT: np.ascontiguousarray(p)})
        for r in self.requests[:n]:
            r.wait()
        return tuple(np.concatenate([r.get_tensor(name).data for r in self.requests[:n]]) for name in OUTPUTS)  # type: ignore[return-value]

    def logits_and_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, feats = self._run(x)
        return torch.from_numpy(logits), torch.from_numpy(feats)
