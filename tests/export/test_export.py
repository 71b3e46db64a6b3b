"""The export stage: every format reproduces the model on real photos, carries
its metadata, loads in consumers that are not our code, and is refused
clearly when truncated or foreign."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import EXAMPLES, TINY_WIDTHS, make_checkpoint, photo_paths

from alexnet_kit.checkpoint import load_model, read_meta
from alexnet_kit.classify import Classifier
from alexnet_kit.engines import load_engine
from alexnet_kit.errors import CheckpointError
from alexnet_kit.model import AlexNetConfig
from alexnet_kit.metrics import average_crops

FORMATS = {"onnx": ".onnx", "torchscript": ".ts", "pt2": ".pt2"}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    # Kaiming init: an untrained network whose outputs still differ from photo
    # to photo, so top-5 agreement means something (paper init at this width
    # gives nearly the same logits for every input).
    config = AlexNetConfig(num_classes=10, **TINY_WIDTHS, init="kaiming")
    return make_checkpoint(tmp_path_factory.mktemp("export") / "small.safetensors", config, seed=3)


@pytest.fixture(scope="module")
def artifacts(checkpoint) -> dict[str, Path]:
    """One artifact per format: ONNX through the CLI, the others through the API."""
    from alexnet_kit.cli import main
    from alexnet_kit.export import export_checkpoint

    out = {}
    onnx_path = checkpoint.with_name("small.onnx")
    assert main(["export", str(checkpoint), "--format", "onnx", "--out", str(onnx_path)]) == 0
    out["onnx"] = onnx_path
    for fmt in ("torchscript", "pt2"):
        report = export_checkpoint(checkpoint, fmt)
        assert report.parity.passed and report.path.exists()
        out[fmt] = report.path
    return out


@pytest.fixture(scope="module")
def crops(checkpoint):
    from alexnet_kit.export.verify import load_photos

    _, meta = load_model(checkpoint)
    return meta.preprocess.crops(load_photos(photo_paths(), meta.preprocess.resize, meta.preprocess.resize_mode), 10)


@pytest.mark.slow
@pytest.mark.parametrize("fmt", FORMATS)
def test_each_format_reproduces_the_model_on_real_photos(fmt, artifacts, checkpoint, crops):
    model, _ = load_model(checkpoint)
    with torch.inference_mode():
        ref_logits, ref_feats = model.logits_and_features(crops)
    engine = load_engine(artifacts[fmt])
    logits, feats = engine.logits_and_features(crops)
    assert (logits - ref_logits).abs().max() < 1e-4
    assert (feats - ref_feats).abs().max() < 1e-4
    top_ref = average_crops(ref_logits, 10).topk(5).indices
    top = average_crops(logits, 10).topk(5).indices
    assert torch.equal(top, top_ref)
    # the photos really are told apart, so identical top-5 lists are a real check
    assert len({tuple(t.tolist()) for t in top_ref}) > 1


def test_metadata_round_trip(artifacts, checkpoint):
    meta, header = read_meta(checkpoint)
    for fmt, path in artifacts.items():
        engine = load_engine(path)
        assert engine.meta.to_json() == meta.to_json(), fmt
        assert engine.fingerprint == header["weights_sha256"], fmt  # exact export: same function, same fingerprint
        assert engine.precision == "fp32"
        assert np.array_equal(engine.meta.preprocess.mean, meta.preprocess.mean)


def test_classifier_agrees_across_backends(artifacts, checkpoint):
    photos = [str(p) for p in sorted(EXAMPLES.iterdir())] + [str(checkpoint)]  # the last is not a photo
    expected = list(Classifier.load(checkpoint, precision="fp32").classify(photos, top=5))
    assert not expected[-1].ok and expected[-1].error
    for fmt, path in artifacts.items():
        got = list(Classifier.load(path, precision="fp32").classify(photos, top=5))
        assert [r.error is None for r in got] == [r.error is None for r in expected]
        for a, b in zip(got, expected):
            assert [l.index for l in a.labels] == [l.index for l in b.labels], fmt
            assert np.allclose([l.probability for l in a.labels], [l.probability for l in b.labels], atol=1e-5)


def test_cli_classify_runs_from_every_artifact(artifacts, capsys):
    from alexnet_kit.cli import main

    docs = []
    for path in artifacts.values():
        assert main(["classify", "--model", str(path), "--json", "-k", "3", str(EXAMPLES / "cat.jpg")]) == 0
        docs.append(json.loads(capsys.readouterr().out))
    assert len({json.dumps([r["top"][0]["index"] for r in d["results"]]) for d in docs}) == 1
    # --engine auto (the default) runs the .onnx on onnxruntime or OpenVINO, whichever passes the gate faster here
    assert docs[0]["engine"].startswith(("onnxruntime", "openvino")) and "CPU" in docs[0]["engine"]


def test_plain_onnxruntime_session_runs_the_artifact(artifacts, checkpoint, crops):
    import onnxruntime as ort

    session = ort.InferenceSession(str(artifacts["onnx"]), providers=["CPUExecutionProvider"])
    envelope = json.loads(session.get_modelmeta().custom_metadata_map["alexnet_kit"])
    meta = json.loads(envelope["meta"])
    assert meta["classes"][0] == "class_0" and envelope["outputs"] == ["logits", "features"]
    assert [o.name for o in session.get_outputs()] == ["logits", "features"]
    assert session.get_inputs()[0].shape[0] != 1  # a dynamic batch axis, not a fixed one
    model, _ = load_model(checkpoint)
    for n in (1, 7):
        logits, feats = session.run(None, {"input": crops[:n].numpy()})
        with torch.inference_mode():
            ref_logits, ref_feats = model.logits_and_features(crops[:n])
        assert logits.shape == (n, 10) and feats.shape == (n, 64)
        assert np.abs(logits - ref_logits.numpy()).max() < 1e-4


CONSUMER = textwrap.dedent(
    """
    import json, sys
    import numpy as np, torch
    kind, path, inp, out = sys.argv[1:]
    extra = {"alexnet_kit.json": ""}
    if kind == "ts":
        module = torch.jit.load(path, _extra_files=extra)
    else:
        module = torch.export.load(path, extra_files=extra).module()
    envelope = json.loads(extra["alexnet_kit.json"])
    with torch.no_grad():
        logits, feats = module(torch.from_numpy(np.load(inp)))
    np.save(out, logits.numpy())
    assert not any(m.startswith("alexnet_kit") for m in sys.modules), "consumer imported alexnet_kit"
    print(json.dumps({"classes": json.loads(envelope["meta"])["classes"], "fingerprint": envelope["fingerprint"]}))
    """
)


@pytest.mark.slow
@pytest.mark.parametrize("fmt,kind", [("torchscript", "ts"), ("pt2", "pt2")])
def test_torch_consumer_that_never_imports_alexnet_kit(fmt, kind, artifacts, checkpoint, crops, tmp_path):
    np.save(tmp_path / "in.npy", crops[:5].numpy())
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(
        [sys.executable, "-c", CONSUMER, kind, str(artifacts[fmt]), str(tmp_path / "in.npy"), str(tmp_path / "out.npy")],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    info = json.loads(done.stdout.strip().splitlines()[-1])
    assert info["fingerprint"] == read_meta(checkpoint)[1]["weights_sha256"]
    assert len(info["classes"]) == 10
    model, _ = load_model(checkpoint)
    with torch.inference_mode():
        ref = model(crops[:5]).numpy()
    assert np.abs(np.load(tmp_path / "out.npy") - ref).max() < 1e-4


@pytest.mark.parametrize("fmt", FORMATS)
def test_truncated_artifact_is_refused_in_one_line(fmt, artifacts, tmp_path):
    data = artifacts[fmt].read_bytes()
    cut = tmp_path / f"cut{FORMATS[fmt]}"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError) as e:
        load_engine(cut)
    assert str(cut) in str(e.value) and "\n" not in str(e.value)
    junk = tmp_path / f"junk{FORMATS[fmt]}"
    junk.write_bytes(b"not a model at all\n" * 10)
    with pytest.raises(CheckpointError, match="junk"):
        load_engine(junk)
    empty = tmp_path / f"empty{FORMATS[fmt]}"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        load_engine(empty)


def test_foreign_artifacts_are_refused(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["input"], ["logits"])], "foreign",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, 3])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [None, 3])],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), tmp_path / "foreign.onnx")
    torch.jit.save(torch.jit.script(torch.nn.Linear(3, 2)), str(tmp_path / "foreign.ts"))
    program = torch.export.export(torch.nn.Linear(3, 2), (torch.randn(2, 3),))
    torch.export.save(program, str(tmp_path / "foreign.pt2"))
    for name in ("foreign.onnx", "foreign.ts", "foreign.pt2"):
        with pytest.raises(CheckpointError, match="not an alexnet-kit artifact"):
            load_engine(tmp_path / name)


def test_cli_refuses_a_truncated_artifact_without_traceback(artifacts, tmp_path):
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(artifacts["onnx"].read_bytes()[:1000])
    done = subprocess.run([sys.executable, "-m", "alexnet_kit", "classify", "--model", str(cut), str(EXAMPLES / "cat.jpg")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().startswith("alexnet-kit: error:") and str(cut) in done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_verification_detects_a_different_function(checkpoint, artifacts, tmp_path):
    """The verifier compares numbers: an artifact of other weights fails it."""
    from alexnet_kit.export.verify import compare, load_photos

    other = make_checkpoint(tmp_path / "other.safetensors", load_model(checkpoint)[1].config, seed=4)
    model, meta = load_model(other)
    photos = load_photos(photo_paths(), meta.preprocess.resize, meta.preprocess.resize_mode)
    report = compare(load_engine(artifacts["onnx"]), model, meta.preprocess, photos)
    assert not report.passed and "logits differ" in report.reason
    same = compare(load_engine(artifacts["onnx"]), load_model(checkpoint)[0], meta.preprocess, photos)
    assert same.passed and same.max_abs_logit < 1e-4 and same.top5_identical == len(photos)


def test_failed_parity_writes_nothing(checkpoint, tmp_path, monkeypatch):
    """An exporter that emits a wrong graph (injected here) must not publish a file."""
    from alexnet_kit.export import api
    from alexnet_kit.export.api import ExportError
    from alexnet_kit.export.graph import LogitsAndFeatures

    def skewed(self, x):
        logits, feats = self.model.logits_and_features(x)
        return logits + 0.01, feats

    monkeypatch.setattr(LogitsAndFeatures, "forward", skewed)
    out = tmp_path / "bad.ts"
    with pytest.raises(ExportError, match="nothing written"):
        api.export_checkpoint(checkpoint, "torchscript", out)
    assert not out.exists() and not list(tmp_path.glob(".bad.ts*"))


@pytest.mark.slow
def test_int8_artifact_is_measured_and_has_its_own_fingerprint(checkpoint, tmp_path):
    from alexnet_kit.export import export_checkpoint

    report = export_checkpoint(checkpoint, "onnx", tmp_path / "small.int8.onnx", int8=True, min_top1=0.5)
    source = read_meta(checkpoint)[1]["weights_sha256"]
    assert report.precision == "int8-static"
    assert report.fingerprint != source and report.fingerprint.startswith(source)
    assert report.parity.top1_agree >= 0.5 * report.parity.photos
    assert 0 < report.parity.max_abs_logit  # quantised: close, never bit-identical
    engine = load_engine(report.path)
    assert engine.fingerprint == report.fingerprint and engine.precision == "int8"  # its mode is in the envelope
    assert engine.envelope.precision == "int8-static"
    assert "int8" in engine.description
    assert "QLinearConv" in {n.op_type for n in __import__("onnx").load(str(report.path)).graph.node} or \
        "QuantizeLinear" in {n.op_type for n in __import__("onnx").load(str(report.path)).graph.node}


def test_int8_needs_onnx_and_unknown_format_is_refused(checkpoint):
    from alexnet_kit.errors import AlexKitError
    from alexnet_kit.export import export_checkpoint

    with pytest.raises(AlexKitError, match="--format onnx"):
        export_checkpoint(checkpoint, "torchscript", int8=True)
    with pytest.raises(AlexKitError, match="unknown export format"):
        export_checkpoint(checkpoint, "tflite")
    with pytest.raises(AlexKitError, match="must end in .onnx"):
        export_checkpoint(checkpoint, "onnx", checkpoint.with_suffix(".bin"))


@pytest.mark.slow
def test_paper_network_onnx_parity(paper_checkpoint, tmp_path):
    """The full 60,965,224-parameter network, exported once (a 244 MB file)."""
    from alexnet_kit.export import export_checkpoint

    report = export_checkpoint(paper_checkpoint, "onnx", tmp_path / "paper.onnx", photos=[EXAMPLES])
    assert report.parity.passed and report.parity.max_abs_logit < 1e-4
    assert report.parity.top5_identical == report.parity.photos == 5
    assert report.bytes > 200e6
    engine = load_engine(report.path)
    assert engine.meta.config.num_classes == 1000 and engine.meta.wnids[0] == "n01440764"
