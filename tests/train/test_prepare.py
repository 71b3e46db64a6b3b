"""alexnet-kit prepare: packing real photos, the split, bad files, resume, mean and PCA."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from alexnet_kit.images import load_square
from alexnet_kit.train.packed import PackedDataset
from alexnet_kit.train.prepare import prepare
from helpers import QUICKSTART_DATA as QUICK, quickstart_photos


def test_packs_real_photos_exactly_as_the_runtime_decodes_them(tmp_path):
    src = quickstart_photos(tmp_path / "src")
    rep = prepare(src, tmp_path / "packed", val_fraction=0.25, workers=2, progress=False)
    assert rep["packed"] == {"train": 9, "val": 3} and rep["skipped"] == {"train": 0, "val": 0}
    ds = PackedDataset(tmp_path / "packed")
    assert ds.classes == ["Leopards", "airplanes", "watch"]
    for name in ("train", "val"):
        sp = ds.split(name)
        for i in range(len(sp)):
            # the very pixels classify will see: prepare decodes with load_square
            np.testing.assert_array_equal(sp.take([i])[0], load_square(sp.files[i], 256))
            assert ds.classes[sp.labels[i]] == Path(sp.files[i]).parent.name
    # one per class held out, and never in both splits
    assert sorted(ds.split("val").labels.tolist()) == [0, 1, 2]
    assert not set(ds.split("train").files) & set(ds.split("val").files)


def test_mean_and_pca_match_numpy_on_real_photos(tmp_path):
    src = quickstart_photos(tmp_path / "src", per_class=5)
    prepare(src, tmp_path / "packed", val_fraction=0.2, workers=2, progress=False)
    ds = PackedDataset(tmp_path / "packed")
    photos = np.stack([load_square(f, 256) for f in ds.split("train").files]).astype(np.float64)
    np.testing.assert_allclose(ds.mean, photos.mean(0).transpose(2, 0, 1), rtol=0, atol=1e-3)
    px = photos.reshape(-1, 3)
    cov = np.cov(px, rowvar=False, bias=True)
    vals, vecs = np.linalg.eig(cov)
    order = np.argsort(vals)[::-1]
    np.testing.assert_allclose(ds.eigvals, vals[order], rtol=1e-4)
    for i in range(3):  # eigenvectors up to sign
        v = vecs[:, order[i]]
        assert abs(abs(float(np.dot(ds.eigvecs[:, i], v))) - 1.0) < 1e-4
    assert ds.eigvals[0] > ds.eigvals[1] > ds.eigvals[2] > 0


def test_corrupt_files_are_skipped_counted_and_listed(tmp_path):
    src = quickstart_photos(tmp_path / "src", per_class=3, classes=("watch", "Leopards"))
    good = sorted((src / "watch").glob("*.jpg"))[0].read_bytes()
    (src / "watch" / "truncated.jpg").write_bytes(good[: len(good) // 3])
    (src / "watch" / "empty.jpg").write_bytes(b"")
    (src / "Leopards" / "notes.jpg").write_text("not a photo at all")
    rep = prepare(src, tmp_path / "packed", val_fraction=0.0, workers=2, progress=False)
    assert rep["skipped"]["train"] == 3 and rep["packed"]["train"] == 6
    listed = (tmp_path / "packed" / "report.txt").read_text()
    assert "truncated.jpg: truncated" in listed and "empty.jpg: empty file" in listed and "notes.jpg: not an image" in listed
    ds = PackedDataset(tmp_path / "packed")
    assert len(ds.split("train")) == 6 and all("notes" not in f for f in ds.split("train").files)
    assert len(ds.split("val")) == 0 and ds.split("val").images.shape == (0, 256, 256, 3)  # --val-fraction 0 trains


def test_imagenet_layout_uses_val_folder(tmp_path):
    src = tmp_path / "src"
    quickstart_photos(src / "train", per_class=3, classes=("watch", "Leopards"))
    for c in ("watch", "Leopards"):
        (src / "val" / c).mkdir(parents=True)
        shutil.copy(sorted((QUICK / c).glob("*.jpg"))[-1], src / "val" / c / "v.jpg")
    rep = prepare(src, tmp_path / "packed", workers=1, progress=False)
    assert rep["packed"] == {"train": 6, "val": 2}


@pytest.mark.slow
def test_interrupted_preparation_resumes_to_the_same_result(tmp_path):
    src = quickstart_photos(tmp_path / "src", per_class=4)
    prepare(src, tmp_path / "a", val_fraction=0.25, workers=2, progress=False)
    prepare(src, tmp_path / "b", val_fraction=0.25, workers=2, progress=False)
    # undo part of b as a killed run leaves it: rows not marked done, stats absent
    status = np.load(tmp_path / "b" / "train" / "status.npy")
    status[3:] = 0
    np.save(tmp_path / "b" / "train" / "status.npy", status)
    mm = np.memmap(tmp_path / "b" / "train" / "images.u8", dtype=np.uint8, mode="r+")
    mm[256 * 256 * 3 * 3:] = 0
    mm.flush()
    for f in ("dataset.json", "mean.npy", "pca.npz"):
        (tmp_path / "b" / f).unlink()
    with pytest.raises(Exception, match="preparation did not finish"):
        PackedDataset(tmp_path / "b")
    prepare(src, tmp_path / "b", val_fraction=0.25, workers=2, progress=False)
    for f in ("train/images.u8", "val/images.u8", "mean.npy", "train/labels.npy"):
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f
    with pytest.raises(Exception, match="other settings"):
        prepare(src, tmp_path / "b", val_fraction=0.5, workers=1, progress=False)


@pytest.mark.slow
def test_cli_prepare_one_line_errors(tmp_path):
    cli = [sys.executable, "-m", "alexnet_kit", "prepare"]
    r = subprocess.run(cli + [str(tmp_path / "absent"), str(tmp_path / "out")], capture_output=True, text=True)
    assert r.returncode == 2 and "absent: not a folder of photos" in r.stderr and "Traceback" not in r.stderr
    (tmp_path / "flat").mkdir()
    r = subprocess.run(cli + [str(tmp_path / "flat"), str(tmp_path / "out")], capture_output=True, text=True)
    assert r.returncode == 2 and "no class subfolders" in r.stderr
    src = quickstart_photos(tmp_path / "src", per_class=2)
    r = subprocess.run(cli + [str(src), str(tmp_path / "out"), "--classes", "watch,Leopards", "--quiet"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "out" / "dataset.json").read_text())["classes"] == ["Leopards", "watch"]
