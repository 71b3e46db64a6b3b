"""alexnet-kit evaluate: 1/10 crops, top-1/top-5 error, ensembles of softmaxes."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from alexnet_kit.checkpoint import load_model, save_checkpoint
from alexnet_kit.images import load_square
from alexnet_kit.meta import ModelMeta
from alexnet_kit.model import AlexNet, AlexNetConfig
from alexnet_kit.train.evaluate import evaluate
from helpers import TINY_WIDTHS, quickstart_photos

CLASSES = ["Leopards", "airplanes", "watch"]


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    return quickstart_photos(tmp_path_factory.mktemp("eval-photos"), per_class=3, classes=CLASSES)


def model_file(path: Path, seed: int) -> Path:
    torch.manual_seed(seed)
    cfg = AlexNetConfig(num_classes=3, **TINY_WIDTHS)
    save_checkpoint(path, AlexNet(cfg), ModelMeta(cfg, CLASSES, trained=True))
    return path


def manual_probs(path: Path, folder: Path, crops: int) -> tuple[np.ndarray, np.ndarray]:
    model, meta = load_model(path)
    files = [(p, CLASSES.index(c)) for c in CLASSES for p in sorted((folder / c).glob("*.jpg"))]
    x = np.stack([load_square(p, 256) for p, _ in files])
    with torch.no_grad():
        probs = torch.softmax(model(meta.preprocess.crops(x, crops)), 1).reshape(len(files), crops, 3).mean(1)
    return probs.numpy(), np.array([y for _, y in files])


@pytest.mark.parametrize("crops", [1, 10])
def test_errors_equal_a_direct_computation(tmp_path, photos, crops):
    m = model_file(tmp_path / "a.safetensors", 0)
    res = evaluate([str(m)], photos, crops=crops, progress=False)
    probs, y = manual_probs(m, photos, crops)
    assert res.photos == 9 and res.crops == crops
    assert res.top1_err == pytest.approx(float((probs.argmax(1) != y).mean()))
    assert res.top5_err == 0.0  # three classes: the true one is always among the top 5


def test_ensemble_averages_softmaxes(tmp_path, photos):
    a, b = model_file(tmp_path / "a.safetensors", 0), model_file(tmp_path / "b.safetensors", 1)
    pa, y = manual_probs(a, photos, 1)
    pb, _ = manual_probs(b, photos, 1)
    res = evaluate([str(a), str(b)], photos, crops=1, progress=False)
    assert res.top1_err == pytest.approx(float((((pa + pb) / 2).argmax(1) != y).mean()))
    assert len(res.models) == 2


def test_ten_crop_ensemble_and_per_class_errors_equal_a_direct_computation(tmp_path, photos):
    """§4.1 then §6: each model's softmax averaged over its ten crops, then over the models."""
    a, b = model_file(tmp_path / "a.safetensors", 0), model_file(tmp_path / "b.safetensors", 1)
    pa, y = manual_probs(a, photos, 10)
    pb, _ = manual_probs(b, photos, 10)
    res = evaluate([str(a), str(b)], photos, crops=10, progress=False)
    wrong = ((pa + pb) / 2).argmax(1) != y
    assert res.photos == 9 and res.crops == 10
    assert res.top1_err == pytest.approx(float(wrong.mean()))
    assert res.per_class_top1_err == {c: round(float(wrong[y == i].mean()), 4) for i, c in enumerate(CLASSES)}


@pytest.mark.slow
def test_unreadable_photos_are_skipped_and_unknown_classes_refused(tmp_path, photos):
    m = model_file(tmp_path / "a.safetensors", 0)
    bad = tmp_path / "bad"
    shutil.copytree(photos, bad)
    (bad / "watch" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really")
    res = evaluate([str(m)], bad, crops=1, progress=False)
    assert res.photos == 9 and len(res.skipped) == 1 and "broken.jpg" in res.skipped[0]
    (bad / "ketch").mkdir()
    r = subprocess.run([sys.executable, "-m", "alexnet_kit", "evaluate", str(m), "--data", str(bad), "--quiet"], capture_output=True, text=True)
    assert r.returncode == 2 and "does not know: ketch" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run([sys.executable, "-m", "alexnet_kit", "evaluate", str(m), "--data", str(photos), "--crops", "10", "--quiet"],
                       capture_output=True, text=True)
    assert r.returncode == 0 and "9 photos, 10 crops: top-1 error" in r.stdout


def test_wordnet_id_folders_match_like_names(tmp_path, photos):
    """ImageNet's val set comes in wnid folders: they match the model's wnids as names do."""
    torch.manual_seed(0)
    cfg = AlexNetConfig(num_classes=3, **TINY_WIDTHS)
    wnids = ["n02128385", "n02690373", "n04548280"]  # leopard, airliner, wall clock: stand-ins for the three
    m = tmp_path / "w.safetensors"
    save_checkpoint(m, AlexNet(cfg), ModelMeta(cfg, CLASSES, wnids, trained=True))
    by_wnid = tmp_path / "by-wnid"
    for c, w in zip(CLASSES, wnids):
        shutil.copytree(photos / c, by_wnid / w)
    by_name = evaluate([str(m)], photos, crops=1, progress=False)
    res = evaluate([str(m)], by_wnid, crops=1, progress=False)
    assert res.photos == 9 and (res.top1_err, res.top5_err) == (by_name.top1_err, by_name.top5_err)
