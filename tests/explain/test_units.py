"""alexnet-kit units: an index's photos that most excite a unit, from a stored, resumable table."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from alexnet_kit.cli import main
from helpers import EXAMPLES, quickstart_photos


@pytest.fixture(scope="module")
def index(kaiming_tiny, tmp_path_factory):
    from alexnet_kit.search import SimilarityIndex

    base = tmp_path_factory.mktemp("units")
    photos = quickstart_photos(base / "photos", per_class=3)
    SimilarityIndex.build([photos], base / "photos.index", model=kaiming_tiny).close()
    return base / "photos.index"


def recomputed(model_path, photo: str, layer: str, unit: int) -> tuple[float, tuple[int, int]]:
    from alexnet_kit.checkpoint import load_model

    model, meta = load_model(model_path)
    x = meta.preprocess.crops(meta.preprocess.load(photo)[None], 1)
    with torch.no_grad():
        a = model.layer_features(x, [layer])[layer][0, unit]
    y, xx = divmod(int(a.flatten().argmax()), a.shape[1])
    return float(a.max()), (y, xx)


def test_top_photos_are_sorted_and_really_hold_the_maximum(index, kaiming_tiny, tmp_path, capsys):
    out = tmp_path / "unit.png"
    assert main(["units", str(index), "--layer", "conv5", "--unit", "3", "--top", "5", "--out", str(out),
                 "--deconv", "-q"]) == 0
    assert "stored the conv5 units of 9 photos" in capsys.readouterr().err
    doc = json.loads(out.with_suffix(".json").read_text())
    tops = doc["units"]["3"]
    values = [t["activation"] for t in tops]
    assert len(tops) == 5 and values == sorted(values, reverse=True)
    value, where = recomputed(kaiming_tiny, tops[0]["path"], "conv5", 3)
    assert value == pytest.approx(values[0], rel=1e-4, abs=1e-5) and tuple(tops[0]["location"]) == where
    left, top, right, bottom = tops[0]["box_in_crop"]
    assert 0 <= left < right <= 224 and 0 <= top < bottom <= 224
    with Image.open(out) as im:
        assert np.asarray(im).std() > 0
    # asked again: answered from the stored table, nothing computed
    assert main(["units", str(index), "--layer", "conv5", "--unit", "4", "--out", str(tmp_path / "u4.png"), "-q"]) == 0
    assert "stored" not in capsys.readouterr().err


def test_the_table_resumes_and_follows_index_add(index, kaiming_tiny, tmp_path, capsys):
    from alexnet_kit.engines import load_engine
    from alexnet_kit.explain.units import UnitTable
    from alexnet_kit.search import SimilarityIndex

    assert main(["units", str(index), "--layer", "pool2", "--units", "all", "--out", str(tmp_path / "all.png"), "-q"]) == 0
    engine = load_engine(kaiming_tiny)
    with SimilarityIndex.open(index) as idx:
        table = UnitTable.of(index, engine, "pool2")
        assert len(table.read()[0]) == 9
        # a pass that stopped: its last chunk missing; the next computes just those photos
        for f in table.folder.glob("chunk-*.npz"):
            f.unlink()
        assert table.update(idx.store) == 9 and len(table.read()[0]) == 9
    extra = tmp_path / "more"
    extra.mkdir()
    shutil.copy(EXAMPLES / "chelsea.png", extra)
    assert main(["index", "add", str(index), str(extra), "-q"]) == 0
    assert "updated the stored conv5 units" in capsys.readouterr().out
    with SimilarityIndex.open(index) as idx:
        ids = UnitTable.of(index, engine, "conv5").read()[0]
        assert len(ids) == len(idx) == 10


@pytest.mark.parametrize("args, needle", [
    (["--layer", "conv9", "--unit", "1"], "unknown layer 'conv9'"),
    (["--layer", "conv5", "--unit", "999"], "conv5 has units 0 to 31, not 999"),
    (["--layer", "fc7", "--unit", "1", "--deconv"], "--deconv projects a map's unit"),
])
def test_bad_input_gets_one_line(index, args, needle, tmp_path, capsys):
    assert main(["units", str(index), *args, "--out", str(tmp_path / "x.png"), "-q"]) != 0
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and needle in err, err
