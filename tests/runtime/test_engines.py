"""Engines for exported artifacts: what they report and how they take input."""
from __future__ import annotations

import json
import warnings

import pytest
import torch

from helpers import EXAMPLES

from alexnet_kit.engines import LOADERS, load_engine
from alexnet_kit.errors import CheckpointError


@pytest.fixture(scope="module")
def onnx_artifact(tiny_checkpoint, tmp_path_factory):
    from alexnet_kit.export import export_checkpoint

    return export_checkpoint(tiny_checkpoint, "onnx", tmp_path_factory.mktemp("eng") / "tiny.onnx", photos=[EXAMPLES]).path


def test_every_format_has_a_loader():
    for suffix in (".safetensors", ".onnx", ".ts", ".pt2"):
        assert suffix in LOADERS
    with pytest.raises(CheckpointError, match=r"\.onnx.*\.pt2.*\.ts"):
        load_engine("model.tflite")


def test_onnx_engine_reports_the_provider_in_use(onnx_artifact):
    engine = load_engine(onnx_artifact)
    in_use = engine.session.get_providers()
    assert engine.provider == in_use[0] == "CPUExecutionProvider"
    assert "CPUExecutionProvider" in engine.description and "fp32" in engine.description


def test_onnx_engine_says_when_cuda_is_not_what_runs(onnx_artifact):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("onnxruntime-gpu installed: this test is about a CPU-only build")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        engine = load_engine(onnx_artifact, device="cuda")
    assert engine.provider == "CPUExecutionProvider"
    assert any("CUDA was asked for" in str(w.message) for w in caught)


def test_onnx_engine_takes_any_batch_and_both_outputs_agree(onnx_artifact, tiny_checkpoint):
    from alexnet_kit.checkpoint import load_model

    engine = load_engine(onnx_artifact, threads=1)
    model, _ = load_model(tiny_checkpoint)
    x = torch.randn(13, 3, 224, 224, generator=torch.Generator().manual_seed(1)) * 40
    logits, feats = engine.logits_and_features(x)
    assert logits.dtype == feats.dtype == torch.float32
    assert logits.shape == (13, 10) and feats.shape == (13, 64)
    assert torch.equal(engine.logits(x), logits) and torch.equal(engine.features(x), feats)
    assert torch.equal(engine.logits(x[:1]), logits[:1]) or (engine.logits(x[:1]) - logits[:1]).abs().max() < 1e-5
    with torch.inference_mode():
        ref = model(x)
    assert (logits - ref).abs().max() < 1e-4
    assert (feats >= 0).all()  # fc7 after ReLU


def test_exported_lrn_uses_no_pow_and_stays_exact(onnx_artifact):
    """The ONNX graph takes d^-0.75 with square roots (faster in onnxruntime);
    the values still follow §3.3's formula."""
    import onnx

    from alexnet_kit.lrn import LocalResponseNorm

    ops = {n.op_type for n in onnx.load(str(onnx_artifact)).graph.node}
    assert "Pow" not in ops and "Sqrt" in ops
    a = torch.relu(torch.randn(2, 16, 9, 9, dtype=torch.float64) * 30)
    lrn = LocalResponseNorm(16, groups=2).double()
    pow_form = lrn(a)
    lrn.sqrt_power = True
    sqrt_form = lrn(a)
    torch.testing.assert_close(sqrt_form, pow_form, rtol=1e-12, atol=0)
    x32 = a.float()
    lrn32 = LocalResponseNorm(16, groups=2)
    lrn32.sqrt_power = True
    torch.testing.assert_close(lrn32(x32).double(), pow_form, rtol=1e-6, atol=1e-6)


# -- the Selection, the Precision, the stored measurements ------------------------------------

def test_precision_reads_every_recorded_form():
    from alexnet_kit.engines.precision import Precision, int8_mode, of_fingerprint

    assert [Precision.parse(t) for t in ("fp32", "bf16", "int8", "int8-static", "int8-dynamic", None)] == [
        Precision.FP32, Precision.BF16, Precision.INT8, Precision.INT8, Precision.INT8, Precision.FP32]
    assert Precision.INT8.label("static") == "int8-static" and int8_mode("int8-dynamic") == "dynamic"
    assert int8_mode("fp32") is None and Precision.FP32.label() == "fp32"
    assert of_fingerprint("ab12-int8-static") is Precision.INT8 and of_fingerprint("ab12") is Precision.FP32
    assert json.dumps({"p": Precision.BF16}) == '{"p": "bf16"}' and f"{Precision.INT8}" == "int8"
    with pytest.raises(ValueError, match="unknown precision 'fp16'"):
        Precision.parse("fp16")


def test_the_library_default_measures_nothing_and_runs_the_reference(onnx_artifact, tmp_path):
    import dataclasses
    import shutil

    from alexnet_kit.engines import Precision, choose
    from alexnet_kit.engines.measurements import sidecar_path

    model = tmp_path / "fresh.onnx"
    shutil.copy(onnx_artifact, model)
    said = []
    s = choose(model, log=said.append)  # no wish: the stored verdict, else the fp32 reference
    assert (s.engine, s.precision, s.path) == ("onnxruntime", Precision.FP32, model)
    assert "reference precision" in s.reason and s.measurement is None
    assert said == [] and not sidecar_path(model).exists()
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.engine = "openvino"
    engine = s.open()
    assert engine.selection is s and engine.precision is Precision.FP32


def _entry(c, ref, speed, **extra):
    """A stored measurement as the gate writes it, for candidate ``c`` (by hand: no measuring)."""
    from alexnet_kit.engines import cpu
    from alexnet_kit.engines.measurements import stamp

    return {"engine": c.engine, "precision": str(c.precision), "reference": ref.name, "file": stamp(c.path),
            "reference_file": stamp(ref.path), "machine": cpu.machine_class(), "photos": 60, "crop": "centre",
            "top1_agreement": 1.0, "fc7_cosine": 1.0, "batch": 80, "crops_per_s": speed,
            "measured_at": "2026-01-02T03:04:05Z", **extra}


def test_an_old_sidecar_still_opens_and_its_verdict_is_used(onnx_artifact, tmp_path):
    """Sidecars written before speeds were kept per batch hold one speed at one batch: still read."""
    import shutil

    from alexnet_kit.engines import choose
    from alexnet_kit.engines.candidates import candidates
    from alexnet_kit.engines.measurements import read_measurements, sidecar_path, speed_at

    model = tmp_path / "old.onnx"
    shutil.copy(onnx_artifact, model)
    every, ref = candidates(model)
    entries = [_entry(c, ref, 100.0 + 50 * i) for i, c in enumerate(every)]  # the last one is the fastest
    sidecar_path(model).write_text(json.dumps({"version": 1, "model": model.name, "measurements": entries}))
    assert read_measurements(model) == entries
    assert speed_at(entries[0], 80) == 100.0 and speed_at(entries[0], 7) is None
    s = choose(model, batch=80)
    assert (s.engine, s.precision) == (every[-1].engine, every[-1].precision)
    assert s.measurement["crops_per_s"] == entries[-1]["crops_per_s"] and "measured 2026-01-02" in s.reason


def test_problems_that_are_not_the_checkpoints_have_their_own_errors(onnx_artifact, tiny_checkpoint):
    from alexnet_kit.engines import choose
    from alexnet_kit.engines.errors import PrecisionMismatch, SelectionRefused, WishError
    from alexnet_kit.engines.torch_checkpoint import TorchCheckpointEngine

    with pytest.raises(SelectionRefused, match="torch runs checkpoints") as e:
        choose(onnx_artifact, engine="torch")
    assert not isinstance(e.value, CheckpointError)
    with pytest.raises(WishError, match="unknown engine 'tflite'"):
        choose(onnx_artifact, engine="tflite")
    with pytest.raises(PrecisionMismatch, match="fp32 or bf16, not 'int8'") as e:
        TorchCheckpointEngine(tiny_checkpoint, precision="int8")
    assert not isinstance(e.value, CheckpointError)
