"""alexnet-kit explain: heat maps that are real evidence, and the files a user redraws them from."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from alexnet_kit.cli import main
from alexnet_kit.cli import explain as explain_cli
from alexnet_kit.explain import DEFAULT_METHOD, METHODS, Explainer
from helpers import EXAMPLES
from synthetic import DISC, scene, train_disc_model

DISC_AT = (100, 150)  # (y, x) in the 256 square; the central 224 crop starts at (16, 16)


@pytest.fixture(scope="module")
def disc_model(tmp_path_factory):
    return train_disc_model(tmp_path_factory.mktemp("disc") / "disc.safetensors")


@pytest.fixture(scope="module")
def disc_photo(tmp_path_factory):
    path = tmp_path_factory.mktemp("scene") / "disc.png"
    Image.fromarray(scene(np.random.default_rng(7), DISC_AT)).save(path)
    return path


def disc_mask(margin: int = 0) -> np.ndarray:
    yy, xx = np.mgrid[:224, :224]
    return (yy - (DISC_AT[0] - 16)) ** 2 + (xx - (DISC_AT[1] - 16)) ** 2 <= (DISC + margin) ** 2


@pytest.mark.slow
def test_every_method_gives_a_map_that_is_not_constant(kaiming_tiny):
    photo = EXAMPLES / "chelsea.png"
    for method in METHODS:
        ex = Explainer.load(kaiming_tiny, method=method, engine="torch", precision="fp32", window=48, stride=24,
                            ig_steps=8)
        (e,) = ex.explain(photo)
        assert e.heat.shape == (224, 224) and e.heat.dtype == np.float32, method
        assert np.isfinite(e.heat).all() and e.heat.std() > 0, method
        assert e.crop.shape == (224, 224, 3)


def test_occluding_the_object_lowers_its_class_more_than_occluding_elsewhere(disc_model, disc_photo):
    ex = Explainer.load(disc_model, method="occlusion", engine="torch", precision="fp32", window=64, stride=16)
    (e,) = ex.explain(disc_photo, ["disc"])
    assert e.label == "disc" and e.score > 0.9  # the model really sees the disc
    inside = disc_mask()
    assert e.heat[inside].mean() > 3 * max(e.heat[~inside].mean(), 1e-6)
    assert disc_mask(margin=32)[np.unravel_index(e.heat.argmax(), e.heat.shape)]


@pytest.mark.parametrize("method", ["occlusion", "gradcam"])
def test_a_photo_similar_to_itself_peaks_where_it_has_content(disc_model, disc_photo, method):
    ex = Explainer.load(disc_model, method=method, engine="torch", precision="fp32", window=64, stride=16)
    e = ex.explain_similar(disc_photo, disc_photo)
    assert e.score == pytest.approx(1.0, abs=1e-5) and e.kind == "similar"
    inside = disc_mask()
    assert e.heat[inside].mean() > 1.3 * e.heat[~inside].mean() > 0
    if method == "occlusion":
        assert disc_mask(margin=32)[np.unravel_index(e.heat.argmax(), e.heat.shape)]


@pytest.mark.slow
def test_occlusion_through_an_exported_artifact_matches_the_checkpoint(disc_model, disc_photo, tmp_path, capsys):
    onnx = tmp_path / "disc.onnx"
    assert main(["export", str(disc_model), "--format", "onnx", "--out", str(onnx)]) == 0
    a = Explainer.load(disc_model, method="occlusion", engine="torch", precision="fp32").explain(disc_photo)[0]
    b = Explainer.load(onnx, method="occlusion", engine="onnxruntime", precision="fp32").explain(disc_photo)[0]
    assert np.abs(a.heat - b.heat).max() < 1e-3 * max(np.abs(a.heat).max(), 1e-6) + 1e-5
    # a gradient method on the artifact: one line naming what works there, exit non-zero, nothing written
    assert main(["explain", str(disc_photo), "--model", str(onnx), "--method", "integrated-gradients",
                 "--out", str(tmp_path / "maps")]) != 0
    err = capsys.readouterr().err
    assert err.strip().count("\n") == 0 and "needs the checkpoint" in err and "occlusion" in err
    assert not (tmp_path / "maps").exists()


def test_cli_writes_overlay_map_and_geometry(disc_model, disc_photo, tmp_path):
    # the CLI names the methods without importing torch; they must be the library's
    assert explain_cli.DEFAULT_METHOD == DEFAULT_METHOD and explain_cli.METHOD_NAMES == METHODS
    out = tmp_path / "maps"
    photo = tmp_path / "wide.png"
    Image.fromarray(scene(np.random.default_rng(3), (128, 128))).resize((400, 256)).save(photo)
    assert main(["explain", str(disc_photo), str(photo), "--model", str(disc_model), "--top", "2", "--out", str(out),
                 "--engine", "torch", "--precision", "fp32"]) == 0
    pngs = sorted(out.glob("*.png"))
    m = DEFAULT_METHOD
    assert [p.name for p in pngs] == [f"disc.{m}.disc.png", f"disc.{m}.plain.png", f"wide.{m}.disc.png", f"wide.{m}.plain.png"]
    facts = json.loads((out / f"wide.{m}.disc.json").read_text())
    heat = np.load(out / facts["map"])
    assert heat.shape == (224, 224) and facts["map_shape"] == [224, 224]
    assert facts["method"] == m and facts["label"] == "disc" and 0 <= facts["probability"] <= 1
    g = facts["geometry"]
    # a 400x256 photo: the central 256 square from x=72, scaled 1:1, and the crop 16 px inside it
    assert g["photo_size"] == [400, 256] and g["crop_box_in_photo"] == [88.0, 16.0, 312.0, 240.0]
    with Image.open(pngs[0]) as im:
        assert im.width > 2 * 224 and np.asarray(im).std() > 0


def test_bad_input_gets_one_line_each(disc_model, disc_photo, tmp_path, capsys):
    cases = {
        "file not found": ["explain", str(tmp_path / "missing.jpg"), "--model", str(disc_model)],
        "no class 'zebra'": ["explain", str(disc_photo), "--model", str(disc_model), "--class", "zebra"],
        "similar.jpg: file not found": ["explain", str(disc_photo), "--model", str(disc_model), "--similar-to",
                                        str(tmp_path / "similar.jpg")],
    }
    for needle, args in cases.items():
        # in-process: an exception would fail the test, as a traceback would
        assert main([*args, "--out", str(tmp_path / "maps"), "--engine", "torch", "--precision", "fp32"]) != 0
        err = capsys.readouterr().err
        errors = [line for line in err.splitlines() if "error" in line]
        assert len(errors) == 1 and needle in errors[0], err
