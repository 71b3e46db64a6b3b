"""ONNX artifacts through onnxruntime (CPU, or CUDA where it really loads).

``onnxruntime-gpu`` lists CUDAExecutionProvider as available even where it
cannot load it (no driver, wrong CUDA) and then silently runs on the CPU, so
the engine reports the provider the session actually uses
(``session.get_providers()``), never the available list.
"""
from __future__ import annotations

import os
import warnings

import numpy as np
import torch

from ..errors import CheckpointError, existing_file, first_line
from .artifact import INPUT, KEY, OUTPUTS, Envelope
from .base import Engine
from .errors import EngineMissing, PrecisionMismatch
from .precision import Precision


def session_options(threads: int | None = None):
    import onnxruntime as ort  # defers onnxruntime, an optional dependency

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3  # warnings about unused initialisers etc. are noise to a user
    if threads:
        so.intra_op_num_threads = int(threads)
    # Idle worker threads sleep instead of spinning: the decoding threads
    # then get the cores between operators, and on a shared CPU spinning
    # steals time from everyone (measured: end-to-end ten-crop photos/s
    # 2.58 vs 1.56 with spinning, busy 2-core EPYC; docs/export.md).
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return so


class OnnxEngine(Engine):
    def __init__(self, path: str | os.PathLike, device: str = "cpu", threads: int | None = None,
                 precision: Precision | str | None = None, batch: int | None = None):
        path = existing_file(path, CheckpointError, "a model file")
        self.path = path
        if precision not in (None, Precision.FP32, Precision.INT8):
            raise PrecisionMismatch(path, f"onnxruntime runs fp32 and int8 artifacts on a CPU, not {precision} "
                                          "(bf16: --engine openvino)")
        try:
            import onnxruntime as ort  # defers onnxruntime, an optional dependency
        except ImportError:
            raise EngineMissing(path, "running .onnx files needs onnxruntime: pip install 'alexnet-kit[cpu]' (or [gpu])") from None
        want_cuda = torch.device(device).type == "cuda"
        providers = (["CUDAExecutionProvider"] if want_cuda else []) + ["CPUExecutionProvider"]
        providers = [p for p in providers if p in ort.get_available_providers()]
        try:
            self.session = ort.InferenceSession(str(path), session_options(threads), providers=providers)
        except Exception as e:  # onnxruntime raises its own pybind exception types
            raise CheckpointError(path, f"not a loadable ONNX model, or truncated ({first_line(e)})") from None
        env = Envelope.parse(path, self.session.get_modelmeta().custom_metadata_map.get(KEY), "ONNX model")
        inputs = [i.name for i in self.session.get_inputs()]
        outputs = [o.name for o in self.session.get_outputs()]
        if inputs != [INPUT] or outputs != list(OUTPUTS):
            raise CheckpointError(path, f"an ONNX model with inputs {inputs} and outputs {outputs}, expected [{INPUT!r}] and {list(OUTPUTS)}")
        self.meta, self.fingerprint, self.envelope = env.meta, env.fingerprint, env
        self.precision = Precision.parse(env.precision)
        if precision is not None and precision != self.precision:
            raise PrecisionMismatch(path, f"an {env.precision} artifact, asked to run it as {precision}"
                                    + (" (int8 needs the int8 export: alexnet-kit export --int8)" if precision == Precision.INT8 else ""))
        self.provider = self.session.get_providers()[0]
        if want_cuda and self.provider != "CUDAExecutionProvider":
            warnings.warn(f"{path}: CUDA was asked for but onnxruntime runs on {self.provider}", RuntimeWarning, stacklevel=2)
        self.description = f"onnxruntime {ort.__version__} {self.provider} ({env.precision})"

    def _run(self, names: list[str], x: torch.Tensor) -> list[np.ndarray]:
        x = np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)
        return self.session.run(names, {INPUT: x})

    def logits_and_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, feats = self._run(list(OUTPUTS), x)
        return torch.from_numpy(logits), torch.from_numpy(feats)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self._run(["logits"], x)[0])

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self._run(["features"], x)[0])
