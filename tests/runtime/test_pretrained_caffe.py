"""The Caffe import against Caffe's own format read by an independent reader (OpenCV's DNN module).

Caffemodels with random values are written in the legacy V1 layout of the
2014 bvlc_alexnet file (``layers``, num/channels/height/width blobs, the
data, dropout, loss and accuracy layers of a training snapshot) and in the
V2 layout (``layer``, BlobShape). OpenCV reads them with bvlc_alexnet's
deploy.prototxt; both get the same 227x227 BGR mean-subtracted blob.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from alexnet_kit.checkpoint import load_model, read_meta
from alexnet_kit.errors import FileProblem
from alexnet_kit.pretrained import convert
from alexnet_kit.pretrained import protobuf as pb
from alexnet_kit.pretrained.caffe import write_caffemodel

from helpers import EXAMPLES, photo_paths
from pretrained_files import caffe_weights, deploy_prototxt, refused_in_one_line, source_case, top5

cv2 = pytest.importorskip("cv2")
if not hasattr(cv2.dnn, "readNetFromCaffe"):  # OpenCV 5 removed the Caffe reader
    pytest.skip("this OpenCV has no Caffe reader (needs opencv-python-headless<5)", allow_module_level=True)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    d = tmp_path_factory.mktemp("caffe")
    paths = photo_paths()
    pre, _, x, state = source_case("caffe", paths)  # x: RGB, mean subtracted, 227
    files = {}
    for layout in ("v1", "v2"):
        files[layout] = d / f"alexnet-{layout}.caffemodel"
        write_caffemodel(files[layout], caffe_weights(state), layout, snapshot=layout == "v1")
    (d / "deploy.prototxt").write_text(deploy_prototxt(227))
    net = cv2.dnn.readNetFromCaffe(str(d / "deploy.prototxt"), str(files["v1"]))
    ref = []
    for i in range(len(x)):
        net.setInput(np.ascontiguousarray(x[i : i + 1].numpy()[:, ::-1]))  # Caffe's input is BGR
        ref.append(net.forward().reshape(-1).copy())
    return dict(dir=d, x=x, state=state, files=files, ref=np.stack(ref), paths=paths, pre=pre)


@pytest.mark.parametrize("layout", ["v1", "v2"])
def test_import_equals_opencv_on_real_photos(case, layout, tmp_path):
    out = convert("caffe", case["files"][layout], tmp_path / "m.safetensors", digest_check=False)
    model, meta = load_model(out)
    with torch.no_grad():
        ours = torch.softmax(model(case["x"]), 1).numpy()
    ref = case["ref"]
    if layout == "v2":  # OpenCV reads the V2 file as well; it must give the same function
        net = cv2.dnn.readNetFromCaffe(str(case["dir"] / "deploy.prototxt"), str(case["files"]["v2"]))
        net.setInput(np.ascontiguousarray(case["x"][:2].numpy()[:, ::-1]))
        np.testing.assert_allclose(net.forward(), ref[:2], atol=1e-5)
    assert ref.max() < 0.99 and ref.max(1).min() > 2e-3  # peaked, not saturated: top-5 means something
    np.testing.assert_allclose(ours, ref, atol=1e-4, rtol=0)
    assert (top5(ours) == top5(ref)).all()
    assert len(case["x"]) >= 5
    assert meta.classes[0] == "tench, Tinca tinca" or meta.wnids[0] == "n01440764"
    assert meta.preprocess.crop == 227 and meta.preprocess.resize_mode == "warp"
    assert meta.config.lrn_scope == "all" and meta.config.conv1_padding == 0
    assert sum(v.numel() for v in model.state_dict().values()) == 60_965_224


def test_the_comparison_would_catch_the_papers_lrn_or_bgr_weights(case, tmp_path):
    """The same weights with the paper's per-tower LRN, or conv1 left in BGR, are measurably different."""
    import dataclasses

    from alexnet_kit.model import AlexNet

    out = convert("caffe", case["files"]["v1"], tmp_path / "m.safetensors", digest_check=False)
    model, meta = load_model(out)
    x = case["x"][:6]
    ref = case["ref"][:6]
    variants = {
        "per-tower LRN": dataclasses.replace(meta.config, lrn_scope="tower"),
        "paper's k=2": dataclasses.replace(meta.config, lrn_k=2.0),
    }
    for what, cfg in variants.items():
        other = AlexNet(cfg).eval()
        other.load_state_dict(model.state_dict())
        with torch.no_grad():
            p = torch.softmax(other(x), 1).numpy()
        assert np.abs(p - ref).max() > 1e-3, what
    bgr = AlexNet(meta.config).eval()
    bgr.load_state_dict(model.state_dict())
    with torch.no_grad():
        bgr.conv1.weight.copy_(bgr.conv1.weight.flip(1))
        assert np.abs(torch.softmax(bgr(x), 1).numpy() - ref).max() > 1e-3


def test_digest_mismatch_refused_unless_asked_and_provenance_says_so(case, tmp_path):
    out = tmp_path / "m.safetensors"
    with pytest.raises(FileProblem, match=r"alexnet-v1.caffemodel: sha1 [0-9a-f]{40} differs from the published sha1:9116a64c"):
        convert("caffe", case["files"]["v1"], out)
    assert not out.exists()
    from alexnet_kit.cli import main

    assert main(["pretrained", "caffe", "--file", str(case["files"]["v1"]), "--out", str(out), "--no-digest-check", "--quiet"]) == 0
    prov = read_meta(out)[0].provenance
    assert prov["digest_checked"] is False and prov["digest_matches"] is False and "no-digest-check" in prov["warning"]
    assert prov["published_accuracy"]["top1"] == 57.1 and prov["source"] == "caffe"
    assert prov["file_digest"].startswith("sha1:")


def test_done_when_convert_then_classify_json(case, tmp_path):
    """The documented round trip: pretrained --file ... --out M, then classify --model M --crops 1 --top 5 --json."""
    out = tmp_path / "M.safetensors"
    run = lambda *a: subprocess.run([sys.executable, "-m", "alexnet_kit", *a], capture_output=True, text=True)  # noqa: E731
    r = run("pretrained", "caffe", "--file", str(case["files"]["v2"]), "--out", str(out), "--no-digest-check")
    assert r.returncode == 0, r.stderr
    photo = case["paths"][0]
    # The engine choice is gated on a few photos only (the test's time); whatever engine wins
    # the gate, the top-5 must be OpenCV's.
    env = {**os.environ, "ALEXNET_KIT_GATE_PHOTOS": str(EXAMPLES)}
    r = subprocess.run([sys.executable, "-m", "alexnet_kit", "classify", "--model", str(out), "--crops", "1", "--top", "5",
                        "--json", str(photo)], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["trained"] is True and doc["crops"] == 1
    top = doc["results"][0]["top"]
    assert [t["index"] for t in top] == list(top5(case["ref"][:1])[0])
    reduced = any(w in doc["engine"] for w in ("bf16", "int8"))  # the gate may pick a faster precision
    np.testing.assert_allclose([t["probability"] for t in top], np.sort(case["ref"][0])[::-1][:5], atol=2e-2 if reduced else 1e-4)


# -- bad input: one line naming the file (and the layer), nothing written --

def _v1_file(path, layers):
    """A V1 NetParameter from (name, type enum, [arrays]) tuples."""
    body = b""
    for name, type_, blobs in layers:
        layer = pb.field_bytes(4, name) + pb.field_varint(5, type_)
        for a in blobs:
            a = np.asarray(a, np.float32)
            dims = (1,) * (4 - a.ndim) + a.shape
            layer += pb.field_bytes(6, b"".join(pb.field_varint(i + 1, d) for i, d in enumerate(dims)) + pb.field_packed_floats(5, a.ravel()))
        body += pb.field_bytes(2, layer)
    path.write_bytes(body)
    return path


def _bad_files(case, d):
    good = case["files"]["v1"].read_bytes()
    (d / "truncated.caffemodel").write_bytes(good[: int(len(good) * 0.6)])
    conv1 = case["state"]["conv1.weight"].numpy()
    small = lambda *s: np.zeros(s, np.float32)  # noqa: E731
    _v1_file(d / "wrong-shape.caffemodel", [("conv1", 4, [small(64, 3, 11, 11), small(64)])])
    _v1_file(d / "missing.caffemodel", [("data", 5, []), ("conv1", 4, [conv1, small(96)]), ("conv2", 4, [small(256, 48, 5, 5), small(256)])])
    _v1_file(d / "vgg.caffemodel", [("conv1_1", 4, [small(64, 3, 3, 3), small(64)]), ("conv1_2", 4, [small(64, 64, 3, 3), small(64)])])
    _v1_file(d / "caffenet.caffemodel", [("conv1", 4, [conv1, small(96)]), ("relu1", 18, []), ("pool1", 17, []), ("norm1", 15, [])])
    (d / "photo.caffemodel").write_bytes(case["paths"][0].read_bytes())
    return {
        "truncated.caffemodel": "truncated",
        "wrong-shape.caffemodel": "layer conv1: weights of shape (64, 3, 11, 11)",
        "missing.caffemodel": "layer conv3 missing",
        "vgg.caffemodel": "layer conv1 missing: not bvlc_alexnet (layers with weights: conv1_1, conv1_2)",
        "caffenet.caffemodel": "CaffeNet",
        "photo.caffemodel": "not a caffemodel",
    }


def test_bad_caffemodels_one_line_nothing_written(case, tmp_path, capsys):
    refused_in_one_line(capsys, "caffe", tmp_path, _bad_files(case, tmp_path))
