"""torchvision and ONNX-zoo imports against their own readers, on real photos.

torchvision: a state dict with torchvision's keys written by ``torch.save``,
run by torchvision's AlexNet topology rebuilt in plain torch (torchvision
cannot be imported with the CPU torch) on torchvision's own preprocessing
(0..1, mean/std). ONNX zoo: a graph with the zoo's names and structure,
run as it is by onnxruntime.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from alexnet_kit.checkpoint import load_model
from alexnet_kit.errors import FileProblem
from alexnet_kit.pretrained import convert

from pretrained_files import TorchvisionAlexNet, refused_in_one_line, source_case, top5, torchvision_state, zoo_onnx

pytestmark = pytest.mark.slow


# -- torchvision -----------------------------------------------------------

@pytest.fixture(scope="module")
def tv(tmp_path_factory):
    d = tmp_path_factory.mktemp("tv")
    pre, photos, _, state = source_case("torchvision")
    # torchvision's transforms, written out: centre crop 224 of the 256 photo, to 0..1, normalise
    c = (256 - 224) // 2
    crop = torch.from_numpy(photos[:, c : c + 224, c : c + 224]).permute(0, 3, 1, 2).float() / 255
    ref_x = (crop - torch.tensor([0.485, 0.456, 0.406])[:, None, None]) / torch.tensor([0.229, 0.224, 0.225])[:, None, None]
    path = d / "alexnet-owt-7be5be79.pth"
    torch.save(torchvision_state(state), path)
    ref_model = TorchvisionAlexNet().eval()
    ref_model.load_state_dict(torch.load(path, weights_only=True))
    with torch.no_grad():
        ref = torch.softmax(ref_model(ref_x), 1).numpy()
    return dict(dir=d, path=path, photos=photos, ref=ref, pre=pre)


def test_torchvision_import_equals_torchvisions_topology(tv, tmp_path):
    out = convert("torchvision", tv["path"], tmp_path / "tv.safetensors", digest_check=False)
    model, meta = load_model(out)
    x = meta.preprocess.crops(tv["photos"], 1)  # our 0..255 arithmetic with mean and std times 255
    with torch.no_grad():
        ours = torch.softmax(model(x), 1).numpy()
    ref = tv["ref"]
    assert ref.max() < 0.99 and ref.max(1).min() > 2e-3
    np.testing.assert_allclose(ours, ref, atol=1e-4, rtol=0)
    assert (top5(ours) == top5(ref)).all()
    assert sum(v.numel() for v in model.state_dict().values()) == 61_100_840
    assert meta.config.towers == 1 and not meta.config.lrn and meta.preprocess.crop == 224
    assert meta.provenance["published_accuracy"]["top1"] == 56.522


def test_torchvision_bad_files_one_line(tv, tmp_path, capsys):
    class Payload:  # anything but tensors and containers: weights_only must refuse it, never run it
        def __reduce__(self):
            return (print, ("unpickled!",))

    state = torch.load(tv["path"], weights_only=True)
    cases = {}
    torch.save({**state, "extra": Payload()}, tmp_path / "pickle.pth")
    cases["pickle.pth"] = "without running code"
    bad = dict(state)
    bad["features.3.weight"] = torch.zeros(192, 32, 5, 5)
    torch.save(bad, tmp_path / "shape.pth")
    cases["shape.pth"] = "layer features.3 (conv2): weights of shape (192, 32, 5, 5)"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7), "bn1.weight": torch.zeros(64)}, tmp_path / "resnet.pth")
    cases["resnet.pth"] = "layer features.0.weight missing: not torchvision's alexnet"
    (tmp_path / "truncated.pth").write_bytes(tv["path"].read_bytes()[:100_000])
    cases["truncated.pth"] = "truncated"
    stdout = refused_in_one_line(capsys, "torchvision", tmp_path, cases)
    assert not any("unpickled!" in s for s in stdout.values())


# -- ONNX zoo --------------------------------------------------------------

@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    ort = pytest.importorskip("onnxruntime")
    d = tmp_path_factory.mktemp("zoo")
    _, _, x, state = source_case("onnx-zoo")
    path = d / "bvlcalexnet-12.onnx"
    zoo_onnx(state, path)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [o.name for o in sess.get_outputs()] == ["prob_1"]
    # the zoo's input: BGR, 0..255 minus the mean, 224x224 (batch 1: its Reshape is fixed)
    ref = np.concatenate([sess.run(None, {"data_0": np.ascontiguousarray(x[i : i + 1].numpy()[:, ::-1])})[0] for i in range(len(x))])
    return dict(dir=d, path=path, x=x, ref=ref)


def test_zoo_import_equals_onnxruntime_on_the_graph_as_it_is(zoo, tmp_path):
    out = convert("onnx-zoo", zoo["path"], tmp_path / "zoo.safetensors", digest_check=False)
    model, meta = load_model(out)
    with torch.no_grad():
        ours = torch.softmax(model(zoo["x"]), 1).numpy()
    ref = zoo["ref"]
    assert ref.max() < 0.99 and ref.max(1).min() > 2e-3
    np.testing.assert_allclose(ours, ref, atol=1e-4, rtol=0)
    assert (top5(ours) == top5(ref)).all()
    assert meta.config.input_size == 224 and meta.config.ceil_pool and meta.config.conv1_padding == 0
    assert meta.config.feature_shapes()["pool5"] == (256, 6, 6)


def test_zoo_bad_files_one_line(zoo, tmp_path, capsys):
    import onnx
    from onnx import TensorProto, helper

    good = zoo["path"].read_bytes()
    cases = {}
    (tmp_path / "truncated.onnx").write_bytes(good[: len(good) // 2])
    cases["truncated.onnx"] = "truncated"
    g = helper.make_graph([helper.make_node("Relu", ["input"], ["output"])], "other",
                          [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 224, 224])],
                          [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 3, 224, 224])])
    onnx.save_model(helper.make_model(g), str(tmp_path / "other.onnx"))
    cases["other.onnx"] = "not the zoo's bvlcalexnet: no input 'data_0'"
    m = onnx.load(str(zoo["path"]))
    keep = [t for t in m.graph.initializer if t.name != "fc7_w_0"]
    del m.graph.initializer[:]
    m.graph.initializer.extend(keep)
    onnx.save_model(m, str(tmp_path / "missing.onnx"))
    cases["missing.onnx"] = "layer fc7: initializer fc7_w_0 missing"
    refused_in_one_line(capsys, "onnx-zoo", tmp_path, cases)


def test_digest_prefix_and_refusal(zoo, tmp_path):
    with pytest.raises(FileProblem, match="differs from the published sha256:6b0da951"):
        convert("onnx-zoo", zoo["path"], tmp_path / "z.safetensors")
    assert not (tmp_path / "z.safetensors").exists()
