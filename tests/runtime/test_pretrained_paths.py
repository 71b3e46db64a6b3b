"""Every existing path with imported models: --model NAME, ten-crop classify, evaluate,
the index, export (ONNX / TorchScript / pt2 with parity, int8) and the two-tower form.

One real-size Caffe model (random values) serves the paths that read a
model file; export runs on narrow models with the imported architectures'
features (no conv1 padding at 227, rounding-up pooling, LRN across all
maps, one tower), which is what the export stage has to get right, at a
fraction of the time.
"""
from __future__ import annotations

import dataclasses
import hashlib

import numpy as np
import pytest
import torch

from alexnet_kit.checkpoint import load_model, save_checkpoint
from alexnet_kit.meta import ModelMeta
from alexnet_kit.model import AlexNet
from alexnet_kit.pretrained import registry
from alexnet_kit.preprocess import Preprocess

from helpers import EXAMPLES, photo_paths, random_caffemodel, serve_file
from pretrained_files import deploy_prototxt, random_state

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def caffe(tmp_path_factory):
    """A bvlc_alexnet-shaped V1 caffemodel with random values, served by a local HTTP server."""
    d = tmp_path_factory.mktemp("served")
    path = random_caffemodel(d / "bvlc_alexnet.caffemodel")
    with serve_file(path) as url:
        yield dict(path=path, url=url, digest="sha1:" + hashlib.sha1(path.read_bytes()).hexdigest(), dir=d)


@pytest.fixture(scope="module")
def cached(caffe, tmp_path_factory):
    """``--model caffe`` on first use: downloaded from the (local) URL and converted into the XDG cache."""
    from alexnet_kit.resolve import resolve_model

    cache = tmp_path_factory.mktemp("xdg-cache")
    mp = pytest.MonkeyPatch()
    mp.setenv("XDG_CACHE_HOME", str(cache))
    mp.delenv("ALEXNET_KIT_OFFLINE", raising=False)
    mp.setenv("ALEXNET_KIT_PRETRAINED_CAFFE_URL", caffe["url"])
    mp.setenv("ALEXNET_KIT_PRETRAINED_CAFFE_DIGEST", caffe["digest"])
    try:
        path = resolve_model("caffe")
        yield dict(path=path, cache=cache, mp=mp)
    finally:
        mp.undo()


def test_pretrained_name_downloads_converts_then_reuses_the_cache(caffe, cached, tmp_path, monkeypatch):
    from alexnet_kit.checkpoint import read_meta
    from alexnet_kit.resolve import resolve_model

    path = cached["path"]
    root = cached["cache"] / "alexnet-kit" / "pretrained"
    assert path == root / "caffe.safetensors"
    assert sorted(p.name for p in root.iterdir() if not p.name.startswith(".")) == ["bvlc_alexnet.caffemodel", "caffe.safetensors"]
    prov = read_meta(path)[0].provenance
    assert prov["digest_checked"] and prov["digest_matches"] and prov["url"] == caffe["url"]
    # afterwards: the cached checkpoint, with no server and no conversion
    monkeypatch.setenv("XDG_CACHE_HOME", str(cached["cache"]))
    monkeypatch.setenv("ALEXNET_KIT_PRETRAINED_CAFFE_URL", "http://127.0.0.1:9/unreachable")
    mtime = path.stat().st_mtime_ns
    assert resolve_model("caffe") == path and path.stat().st_mtime_ns == mtime
    # an existing file of that name still wins
    monkeypatch.chdir(tmp_path)
    (tmp_path / "caffe").write_bytes(b"x")
    assert resolve_model("caffe").resolve() == (tmp_path / "caffe").resolve()


def test_ten_crop_classify_agrees_with_opencv(caffe, cached):
    """Classifier (ten crops of the warped photo, averaged softmax, §4.1) against OpenCV on the same ten crops."""
    cv2 = pytest.importorskip("cv2")
    if not hasattr(cv2.dnn, "readNetFromCaffe"):
        pytest.skip("this OpenCV has no Caffe reader (needs opencv-python-headless<5)")
    from alexnet_kit.classify import Classifier
    from alexnet_kit.engines.torch_checkpoint import TorchCheckpointEngine

    clf = Classifier(TorchCheckpointEngine(cached["path"]), crops=10)
    paths = photo_paths()[:4]
    results = list(clf.classify(paths, top=5))
    (caffe["dir"] / "deploy.prototxt").write_text(deploy_prototxt(227))
    net = cv2.dnn.readNetFromCaffe(str(caffe["dir"] / "deploy.prototxt"), str(caffe["path"]))
    pre = clf.meta.preprocess
    for p, r in zip(paths, results):
        x = pre.crops(pre.load(p)[None], 10).numpy()[:, ::-1]
        net.setInput(np.ascontiguousarray(x))
        ref = net.forward().mean(0)
        assert [l.index for l in r.labels] == list(np.argsort(-ref, kind="stable")[:5])
        np.testing.assert_allclose([l.probability for l in r.labels], np.sort(ref)[::-1][:5], atol=1e-4)


def test_evaluate_and_index_with_the_imported_model(cached, tmp_path):
    """train/evaluate.py (through checkpoint.load_model) and the index builder (through engines)."""
    from alexnet_kit.classify import Classifier
    from alexnet_kit.engines.torch_checkpoint import TorchCheckpointEngine
    from alexnet_kit.search import SimilarityIndex
    from alexnet_kit.train.evaluate import evaluate

    model = cached["path"]
    clf = Classifier(TorchCheckpointEngine(model), crops=1)
    paths = sorted(EXAMPLES.iterdir())
    top1 = [r.labels[0].name for r in clf.classify(paths, top=1)]
    data = tmp_path / "val"
    for i, (p, name) in enumerate(zip(paths, top1)):
        # label each photo with the model's own answer, except the first: then top-1 error is exactly 1/N
        label = name if i else next(c for c in clf.meta.classes if c != name)
        (data / label).mkdir(parents=True, exist_ok=True)
        (data / label / p.name).write_bytes(p.read_bytes())
    res = evaluate([str(model)], data, crops=1, batch=4, progress=False)
    assert res.photos == len(paths) and res.top1_err == pytest.approx(1 / len(paths))

    index = tmp_path / "index"
    SimilarityIndex.build(paths, index, model)
    with SimilarityIndex.open(index) as idx:
        assert len(idx) == len(paths)
        hit = idx.query(paths[2], top=1, exclude_self=False)[0]
        assert hit.path.endswith(paths[2].name) and hit.score == pytest.approx(1.0, abs=1e-4)


def test_two_tower_form_of_the_imported_caffe_model(cached):
    from alexnet_kit.towers import TowerAlexNet

    grouped, meta = load_model(cached["path"])
    towers = TowerAlexNet.from_grouped(grouped, ["cpu", "cpu"]).eval()
    x = meta.preprocess.crops(np.stack([meta.preprocess.load(p) for p in sorted(EXAMPLES.iterdir())[:3]]), 1)
    with torch.no_grad():
        torch.testing.assert_close(towers(x), grouped(x), rtol=1e-5, atol=1e-5)


# -- export of the imported architectures -----------------------------------

def _narrow(config, preprocess: Preprocess, path, seed: int = 0):
    cfg = dataclasses.replace(config, num_classes=10, conv_channels=(16, 32, 48, 48, 32) if config.towers == 2 else (16, 24, 48, 32, 32),
                              fc_features=64)
    pre = preprocess
    x = pre.crops(np.stack([pre.load(p) for p in sorted(EXAMPLES.iterdir())]), 1)
    state = random_state(cfg, x, seed=seed)
    model = AlexNet(cfg)
    model.load_state_dict(state)
    save_checkpoint(path, model, ModelMeta(cfg, [f"class_{i}" for i in range(10)], preprocess=pre, trained=True))
    return path


@pytest.mark.parametrize("name,formats", [("caffe", ("onnx", "torchscript", "pt2")), ("onnx-zoo", ("onnx",)), ("torchvision", ("onnx",))])
def test_export_parity_for_imported_architectures(name, formats, tmp_path):
    from alexnet_kit.engines import load_engine
    from alexnet_kit.export import export_checkpoint

    src = registry.SOURCES[name]
    ckpt = _narrow(src.config, src.preprocess(), tmp_path / f"{name}.safetensors")
    for fmt in formats:
        report = export_checkpoint(ckpt, fmt, photos=[EXAMPLES])
        assert report.parity.passed and report.parity.max_abs_logit < 1e-4, (fmt, report.parity.summary())
        engine = load_engine(report.path)
        cfg = engine.meta.config  # the artifact carries the imported architecture's fields
        assert (cfg.conv1_padding, cfg.lrn_scope, cfg.ceil_pool, cfg.input_size) == (
            src.config.conv1_padding, src.config.lrn_scope, src.config.ceil_pool, src.config.input_size)
        assert engine.meta.preprocess.resize_mode == src.preprocess().resize_mode
    if name == "caffe":
        report = export_checkpoint(ckpt, "onnx", tmp_path / "caffe.int8.onnx", int8=True, photos=[EXAMPLES], min_top1=0.6)
        assert report.parity.passed and report.precision.startswith("int8")


def test_demo_service_serves_the_imported_model(cached):
    """The demo's service (what the Gradio page calls): ten-crop labels, the crops strip, Figure 3's kernels."""
    from alexnet_kit.apps.service import DemoService
    from alexnet_kit.classify import Classifier
    from alexnet_kit.engines.torch_checkpoint import TorchCheckpointEngine

    clf = Classifier(TorchCheckpointEngine(cached["path"]), crops=10)
    service = DemoService(clf, model_path=cached["path"])
    photo = service.read_photo(EXAMPLES / "cat.jpg")
    assert photo.shape == (256, 256, 3)
    labels = service.classify(photo, top=5)
    want = clf.classify_one(EXAMPLES / "cat.jpg", top=5).labels
    assert [l.index for l in labels] == [l.index for l in want]
    assert service.crops(photo).ndim == 3
    kernels = service.kernels()
    assert kernels is not None and kernels.ndim == 3
