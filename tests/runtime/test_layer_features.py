"""Every named layer as features: the engines' activations, the extractor's blocks, the file's layers,
and `info --layers`, which must list exactly the shapes and columns that `features --layer` writes."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from helpers import EXAMPLES, photo_paths, run_cli

from alexnet_kit.cli import main
from alexnet_kit.engines.base import Engine
from alexnet_kit.errors import AlexKitError
from alexnet_kit.features import FeatureExtractor, FeatureSettings
from alexnet_kit.features_file import export_features, read_features, split_layers
from alexnet_kit.images import load_square
from alexnet_kit.named_layers import LAYER_NAMES, MAP_LAYERS, layer_shapes

ALL = ",".join(LAYER_NAMES)


@pytest.fixture(scope="module")
def photos() -> list[str]:
    return [str(p) for p in photo_paths()[:3]]


def cli(capsys, *args) -> tuple[int, str, str]:
    """`alexnet-kit ARGS` in this process (a subprocess costs seconds): (exit status, stdout, stderr)."""
    rc = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err


def euclidean(model, **kw) -> FeatureExtractor:
    return FeatureExtractor.load(model, engine="torch", precision="fp32", metric="euclidean", **kw)


def test_every_layer_written_has_the_shape_and_columns_info_lists(tiny_checkpoint, photos, tmp_path, capsys):
    rc, out, _ = cli(capsys, "info", tiny_checkpoint, "--layers", "--json")
    assert rc == 0
    info = json.loads(out)
    listed = {r["name"]: r for r in info["layers"]}
    assert list(listed) == list(LAYER_NAMES) and info["computes"] == list(LAYER_NAMES) and not info["need_checkpoint"]
    for spatial in ("flatten", "max"):  # mean has max's columns (tested below)
        f = tmp_path / f"{spatial}.npz"
        rc, _, err = cli(capsys, "features", *photos, "--out", f, "--model", tiny_checkpoint, "--layer", ALL,
                         "--spatial", spatial, "--engine", "torch", "--precision", "fp32", "-q")
        assert rc == 0, err
        _, vectors, meta = read_features(f)
        assert vectors.shape == (len(photos), sum(r["columns"][spatial] for r in listed.values()))
        blocks = split_layers(vectors, meta)
        assert list(blocks) == list(LAYER_NAMES)
        for entry in meta["layers"]:
            r = listed[entry["name"]]
            assert entry["shape"] == r["shape"] and entry["end"] - entry["start"] == r["columns"][spatial]
            whole = spatial == "flatten" or len(r["shape"]) == 1
            assert blocks[entry["name"]].shape == (len(photos), *(r["shape"] if whole else [r["columns"][spatial]]))
            assert entry["spatial"] == (spatial if len(r["shape"]) == 3 else None)


def test_info_layers_lists_receptive_fields_and_columns(tiny_checkpoint, tiny_config, capsys, monkeypatch):
    rc, out, _ = cli(capsys, "info", tiny_checkpoint, "--layers")
    assert rc == 0
    monkeypatch.setenv("ALEXNET_KIT_MODEL", str(tiny_checkpoint))
    assert cli(capsys, "info", "--layers")[1] == out  # without MODEL: the default model's
    rows = {line.split()[0]: line for line in out.splitlines()[1:len(LAYER_NAMES) + 1]}
    assert list(rows) == list(LAYER_NAMES)
    c1 = tiny_config.conv_channels[0]
    assert rows["conv1"].split()[1:5] == [f"{c1}x55x55", f"{c1 * 55 * 55:,}", str(c1), "11x11"]
    assert "195x195 /32" in rows["pool5"] and " - " in rows["fc7"]
    assert all(line.endswith("yes") for line in rows.values())


def test_flatten_max_and_mean_are_one_activation_seen_three_ways(kaiming_tiny, photos):
    layers = "conv2_pre,pool5,fc7"
    flat, mx, mean = (euclidean(kaiming_tiny, layer=layers, spatial=s) for s in ("flatten", "max", "mean"))
    assert flat.dim > mx.dim == mean.dim
    x = np.stack([load_square(p, flat.meta.preprocess.resize) for p in photos])
    a, b, c = (fx.features(x) for fx in (flat, mx, mean))
    for name in ("conv2_pre", "pool5"):
        s, e, shape = flat.layer_columns[name]
        maps = a[:, s:e].reshape(len(photos), shape[0], -1)
        s, e, _ = mx.layer_columns[name]
        np.testing.assert_array_equal(b[:, s:e], maps.max(-1))
        np.testing.assert_allclose(c[:, s:e], maps.mean(-1), rtol=1e-5, atol=1e-6)
    fc7 = [fx.layer_columns["fc7"] for fx in (flat, mx, mean)]
    np.testing.assert_array_equal(a[:, fc7[0][0]:fc7[0][1]], b[:, fc7[1][0]:fc7[1][1]])  # vectors are unaffected
    np.testing.assert_array_equal(a[:, fc7[0][0]:fc7[0][1]], c[:, fc7[2][0]:fc7[2][1]])


def test_ten_crops_average_per_column_and_cosine_normalises_each_block(kaiming_tiny, photos):
    fx = euclidean(kaiming_tiny, crops=10, layer="conv5,fc7", spatial="max")
    x = np.stack([load_square(p, fx.meta.preprocess.resize) for p in photos])
    acts = fx.engine.activations(fx.meta.preprocess.crops(x, 10), ["conv5", "fc7"])
    want = np.concatenate([acts["conv5"].amax((2, 3)).reshape(len(x), 10, -1).mean(1).numpy(),
                           acts["fc7"].reshape(len(x), 10, -1).mean(1).numpy()], axis=1)
    np.testing.assert_allclose(fx.features(x), want, rtol=1e-5, atol=1e-6)
    cos = FeatureExtractor(fx.engine, layer="conv5,fc7", spatial="max")
    rows = cos.features(x)
    for s, e, _ in cos.layer_columns.values():
        np.testing.assert_allclose(np.linalg.norm(rows[:, s:e], axis=1), 1.0, atol=1e-5)


def test_layer_features_of_the_paper_network_have_the_listed_shapes_and_fc8_is_forward():
    from alexnet_kit.config import AlexNetConfig
    from alexnet_kit.model import AlexNet

    torch.manual_seed(0)
    net = AlexNet(AlexNetConfig()).eval()
    x = torch.randn(2, 3, 224, 224)
    with torch.inference_mode():
        got = net.layer_features(x, LAYER_NAMES)
        logits = net(x)
    assert {n: tuple(t.shape[1:]) for n, t in got.items()} == layer_shapes(net.config)
    assert torch.equal(got["fc8"], logits)
    assert torch.equal(got["conv1"], torch.relu(got["conv1_pre"]))  # the in-place ReLU left the copy alone


def test_pool5_flattened_is_the_old_pool5_vector_and_fc7_is_unchanged(kaiming_tiny, photos):
    from alexnet_kit.checkpoint import load_model

    fx = euclidean(kaiming_tiny, layer="pool5,fc7")
    assert fx.settings.spatial == "flatten" and fx.dim == fx.meta.config.flat_features + fx.meta.config.fc_features
    x = np.stack([load_square(p, fx.meta.preprocess.resize) for p in photos])
    net, meta = load_model(kaiming_tiny)
    crops = meta.preprocess.crops(x, 1)
    with torch.inference_mode():
        pool5, fc7 = net.conv_features(crops).numpy(), net.fc7_features(crops).numpy()
    np.testing.assert_array_equal(fx.features(x), np.concatenate([pool5, fc7], axis=1))
    np.testing.assert_array_equal(euclidean(kaiming_tiny).features(x), fc7)


class _Artifact(Engine):
    """An engine with an artifact's two outputs, and no file behind it."""

    path = "m.onnx"
    description = "a test artifact"

    def logits_and_features(self, x):
        return x[:, :3] * 2, x[:, 3:]


def test_an_artifact_engine_serves_fc7_and_fc8_and_names_what_needs_a_checkpoint():
    engine, x = _Artifact(), torch.arange(12.0).reshape(2, 6)
    got = engine.activations(x, "fc8,fc7")
    assert list(got) == ["fc8", "fc7"] and torch.equal(got["fc8"], x[:, :3] * 2) and torch.equal(got["fc7"], x[:, 3:])
    assert torch.equal(engine.activations(x, ["fc7"])["fc7"], x[:, 3:])
    with pytest.raises(AlexKitError) as e:
        engine.activations(x, ["conv3", "fc7", "pool5"])
    assert str(e.value) == "m.onnx: conv3, pool5 features need a checkpoint (.safetensors); this model file computes fc7, fc8 only"
    with pytest.raises(AlexKitError, match="unknown layer 'conv6'"):
        engine.activations(x, "conv6")


def test_old_index_settings_read_back_equal_and_new_ones_round_trip():
    for old in ('{"crops":1,"layer":"fc7","metric":"cosine"}', '{"crops":10,"layer":"pool5","metric":"euclidean"}'):
        s = FeatureSettings.from_json(old)
        assert s.to_json() == old and s.spatial == "flatten"
    assert FeatureSettings.from_json('{"crops":1,"layer":"fc7","metric":"cosine"}') == FeatureSettings()
    assert FeatureSettings(layer="fc7", spatial="max") == FeatureSettings()  # vectors: spatial changes nothing
    s = FeatureSettings(layer="conv3, fc7", spatial="mean")
    assert s.layer == "conv3,fc7" and s.layers == ("conv3", "fc7") and '"spatial":"mean"' in s.to_json()
    assert FeatureSettings.from_json(s.to_json()) == s and s != FeatureSettings(layer="conv3,fc7")
    assert s.describe() == "conv3 after ReLU (mean per map) + fc7 after ReLU, centre crop, L2-normalised (cosine)"
    for bad in (dict(layer="conv9"), dict(layer="fc7,fc7"), dict(layer="pool5", spatial="median")):
        with pytest.raises(ValueError):
            FeatureSettings(**bad)


def test_a_single_fc7_file_keeps_its_keys(kaiming_tiny, photos, tmp_path):
    fx = FeatureExtractor.load(kaiming_tiny)
    export_features(photos, tmp_path / "f.npz", fx)
    with np.load(tmp_path / "f.npz") as z:
        assert sorted(z.files) == ["fingerprint", "meta", "paths", "unreadable_errors", "unreadable_paths", "vectors"]
    _, vectors, meta = read_features(tmp_path / "f.npz")
    assert sorted(meta) == sorted(["fingerprint", "model", "layer", "crops", "metric", "features", "dim", "engine",
                                   "precision", "unreadable", "layers"])
    assert meta["layer"] == "fc7" and meta["features"] == "fc7 after ReLU, centre crop, L2-normalised (cosine)"
    assert meta["layers"] == [{"name": "fc7", "shape": [64], "spatial": None, "start": 0, "end": 64}]
    np.testing.assert_array_equal(split_layers(vectors, meta)["fc7"], vectors)
    old = {k: v for k, v in meta.items() if k != "layers"}  # a file from before layers were recorded
    np.testing.assert_array_equal(split_layers(vectors, old)["fc7"], vectors)


def test_an_unknown_layer_is_one_line(tmp_path):
    proc = run_cli("features", EXAMPLES, "--out", tmp_path / "f.npz", "--layer", "fc7,conv9")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "unknown layer 'conv9': the layers are conv1_pre" in lines[0]
    assert not (tmp_path / "f.npz").exists()


@pytest.mark.slow  # an ONNX export and a subprocess: over 2.5 s
def test_an_onnx_artifact_computes_fc7_and_fc8_and_refuses_a_conv_layer_in_one_line(tiny_checkpoint, photos, tmp_path,
                                                                                    capsys):
    from alexnet_kit.engines import load_engine
    from alexnet_kit.export import export_checkpoint

    onnx = export_checkpoint(tiny_checkpoint, "onnx", tmp_path / "m.onnx", photos=[EXAMPLES]).path
    proc = run_cli("features", EXAMPLES, "--out", tmp_path / "f.npz", "--model", onnx, "--layer", "conv3,fc7")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and f"{onnx}: conv3 features need a checkpoint" in lines[0] and "fc7, fc8 only" in lines[0]
    rc, out, _ = cli(capsys, "info", onnx, "--layers", "--json")
    info = json.loads(out)
    assert rc == 0 and info["computes"] == ["fc7", "fc8"] and len(info["need_checkpoint"]) == len(LAYER_NAMES) - 2
    assert [r["name"] for r in info["layers"] if r["computed_here"]] == ["fc7", "fc8"]
    assert "the other 18 layers need the checkpoint" in cli(capsys, "info", onnx, "--layers")[1]
    engine = load_engine(onnx)
    x = engine.meta.preprocess.crops(np.stack([load_square(p) for p in photos]), 1)
    logits, feats = engine.logits_and_features(x)
    got = engine.activations(x, ["fc7", "fc8"])
    assert torch.equal(got["fc7"], feats) and torch.equal(got["fc8"], logits)
    assert FeatureExtractor(engine, layer="fc7,fc8").dim == 64 + 10
    assert all(n in MAP_LAYERS or n.startswith("fc") for n in info["need_checkpoint"])
