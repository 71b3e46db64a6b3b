"""Engines for exported artifacts: what they report and how they take input."""
from __future__ import annotations

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
