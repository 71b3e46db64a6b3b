"""Index life cycle on real photos: build, add, remove, resume after a kill, integrity checks."""
from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from alexnet_kit.cli import main
from alexnet_kit.search import IndexProblem, SimilarityIndex, builder
from helpers import ROOT, shared


def real_photos(n: int, step: int = 37) -> list[Path]:
    return sorted(shared("imagenet-samples").glob("*.JPEG"))[::step][:n]


def make_folder(d: Path, photos: list[Path]) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    for p in photos:
        shutil.copy(p, d / p.name)
    return d


@pytest.fixture
def folder(tmp_path):
    d = make_folder(tmp_path / "photos", real_photos(12))
    (d / "not-a-photo.jpg").write_text("hello")
    (d / "sub").mkdir()
    shutil.copy(real_photos(13)[-1], d / "sub" / "nested.JPEG")
    return d


def test_build_skips_and_reports_bad_photos(folder, kaiming_tiny, tmp_path, capsys):
    out = tmp_path / "i.index"
    rc = main(["index", "build", str(folder), "--out", str(out), "--model", str(kaiming_tiny), "-q"])
    assert rc == 1  # built, but one photo was unreadable
    cap = capsys.readouterr()
    assert "not-a-photo.jpg" in cap.err and "13 photos indexed" in cap.out and "1 unreadable" in cap.out
    assert main(["index", "info", str(out), "--json", "--errors"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["photos"] == 13 and info["unreadable"] == 1 and info["exact"] and info["index_type"] == "Flat"
    assert info["unreadable_photos"][0]["path"].endswith("not-a-photo.jpg")
    assert info["model_fingerprint"] and info["feature_settings"] == {"layer": "fc7", "crops": 1, "metric": "cosine"}
    # building again over a finished index is refused, not silently redone
    assert main(["index", "build", str(folder), "--out", str(out), "--model", str(kaiming_tiny), "-q"]) == 2
    assert "index add" in capsys.readouterr().err


def test_add_processes_only_new_and_changed_photos(folder, kaiming_tiny, tmp_path):
    out = tmp_path / "i.index"
    first = builder.build([folder], out, kaiming_tiny)
    assert first.extracted == 13 and first.bad == 1
    extra = real_photos(15, step=41)[-2:]
    for p in extra:
        shutil.copy(p, folder / p.name)
    names = sorted(folder.glob("*.JPEG"))
    touched, changed = names[0], names[1]
    os.utime(touched, ns=(time.time_ns(), time.time_ns() + 10**9))  # same bytes, new mtime
    changed.write_bytes(names[2].read_bytes())  # new bytes
    idx = SimilarityIndex.open(out)
    old_ids = {h.path: h.id for h in idx.query(names[2], top=20)}
    report = idx.add()  # rescans the folder it was built from
    assert (report.new, report.changed, report.extracted) == (2, 1, 3)
    assert report.unchanged == 13 and report.bad_known == 1 and not report.rebuilt
    assert len(idx) == 15
    hits = idx.query(names[2], top=1)
    assert hits[0].path == str(changed) and hits[0].id != old_ids.get(str(changed))  # the new bytes are a copy of names[2]
    again = idx.add()
    assert again.extracted == 0 and again.unchanged == 16
    idx.close()


def test_remove_by_path_folder_and_missing(folder, kaiming_tiny, tmp_path, capsys):
    out = tmp_path / "i.index"
    builder.build([folder], out, kaiming_tiny)
    gone = sorted(folder.glob("*.JPEG"))[0]
    gone.unlink()
    assert main(["index", "remove", str(out), str(folder / "sub"), "--missing"]) == 0
    assert "removed 2 photos" in capsys.readouterr().out
    with SimilarityIndex.open(out) as idx:
        assert len(idx) == 11
        paths = {h.path for h in idx.query(sorted(folder.glob("*.JPEG"))[0], top=50)}
        assert str(gone) not in paths and str(folder / "sub" / "nested.JPEG") not in paths


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_compressed_index_types_build_query_and_update(folder, kaiming_tiny, tmp_path, kind):
    out = tmp_path / f"{kind}.index"
    idx = SimilarityIndex.build(folder, out, model=kaiming_tiny, index_type=kind)
    info = idx.info()
    assert not info["exact"] and ("IVF" in info["index_type"] if kind == "ivf" else "HNSW" in info["index_type"])
    assert info["bytes_per_photo"] < 64 * 4 + 200  # 8-bit codes (+ links) instead of 256-byte float vectors
    photos = sorted(folder.glob("*.JPEG"))
    shutil.copy(photos[3], folder / "dup.JPEG")
    report = idx.add()
    assert report.extracted == 1
    assert idx.query(photos[3], top=1)[0].path == str(folder / "dup.JPEG")
    idx.remove([folder / "dup.JPEG"])
    assert len(idx) == 13 and idx.query(photos[3], top=1)[0].path != str(folder / "dup.JPEG")
    idx.close()


@pytest.mark.slow
def test_killed_build_resumes_where_it_stopped(tmp_path, paper_checkpoint):
    """SIGKILL a real build mid-way; running it again extracts only what was not committed."""
    from alexnet_kit.features import FeatureExtractor

    folder = make_folder(tmp_path / "photos", real_photos(40, step=23))
    out = tmp_path / "i.index"
    # The first use of a model measures its engines (minutes on a busy CPU) and stores the choice
    # beside it: done here, so the build below starts extracting within the wait, in any test order.
    FeatureExtractor.load(paper_checkpoint)
    cmd = [sys.executable, "-m", "alexnet_kit", "index", "build", str(folder), "--out", str(out),
           "--model", str(paper_checkpoint), "--chunk", "4", "--batch", "2", "-q"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    store = out / "photos.sqlite"
    committed = 0
    deadline = time.time() + 300  # generous: on a loaded 2-core machine the model load alone can take a minute
    while time.time() < deadline and proc.poll() is None:
        if store.exists():
            try:
                with sqlite3.connect(f"file:{store}?mode=ro", uri=True, timeout=0.1) as c:
                    committed = c.execute("SELECT COUNT(*) FROM photos").fetchone()[0]
            except sqlite3.OperationalError:
                committed = 0
            if committed >= 8:
                break
        time.sleep(0.02)
    assert proc.poll() is None, "the build finished before it could be interrupted"
    assert committed >= 8, f"the build committed {committed} photos in 300 s"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    with sqlite3.connect(store) as c:
        committed = c.execute("SELECT COUNT(*) FROM photos").fetchone()[0]
    assert 8 <= committed < 40
    with pytest.raises(IndexProblem, match="resume"):
        SimilarityIndex.open(out)
    report = builder.build([folder], out, paper_checkpoint)
    assert report.resumed and report.extracted == 40 - committed and report.unchanged == committed
    with SimilarityIndex.open(out) as idx:
        assert len(idx) == 40
        probe = sorted(folder.glob("*.JPEG"))[5]
        direct = idx.extractor.extract_one(probe)
        ids, stored = idx.store.vectors([idx.store.row(str(probe)).id], idx.dim)
        np.testing.assert_allclose(stored[0], direct, rtol=2**-10, atol=1e-5)  # stored as float16: 11 significant bits


def test_corrupt_faiss_file_is_detected(folder, kaiming_tiny, tmp_path, capsys):
    out = tmp_path / "i.index"
    builder.build([folder], out, kaiming_tiny)
    f = out / "vectors.faiss"
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0xFF
    f.write_bytes(bytes(data))
    with pytest.raises(IndexProblem, match="checksum mismatch"):
        SimilarityIndex.open(out)
    assert main(["index", "info", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "vectors.faiss" in err and "corrupt" in err
    f.write_bytes(bytes(data[: len(data) // 3]))  # truncated: caught even without the full checksum
    with pytest.raises(IndexProblem, match="truncated"):
        SimilarityIndex.open(out, verify=False)
    # the store still holds every vector: the FAISS file is rebuilt from it, no network run
    report = builder.add(out, rebuild_index=True)
    assert report.extracted == 0 and report.rebuilt
    assert len(SimilarityIndex.open(out)) == 13


@pytest.mark.parametrize("damage", ["header", "page", "truncate"])
def test_corrupt_metadata_store_is_detected(folder, kaiming_tiny, tmp_path, damage):
    out = tmp_path / "i.index"
    builder.build([folder], out, kaiming_tiny)
    f = out / "photos.sqlite"
    data = bytearray(f.read_bytes())
    if damage == "header":
        data[:16] = b"garbage garbage!"
    elif damage == "page":
        page = int.from_bytes(data[16:18], "big")
        data[page + 8 : page + 4096 - 64] = os.urandom(4096 - 72)  # the second page: a b-tree page
    else:
        data = data[: len(data) // 2]
    f.write_bytes(bytes(data))
    with pytest.raises(IndexProblem, match="corrupt metadata store"):
        SimilarityIndex.open(out)


def test_unknown_index_type_is_refused_before_any_work(folder, kaiming_tiny, tmp_path, capsys):
    out = tmp_path / "i.index"
    assert main(["index", "build", str(folder), "--out", str(out), "--model", str(kaiming_tiny), "--index-type", "Bogus42"]) == 2
    assert "not a FAISS index type" in capsys.readouterr().err and not out.exists()


def test_not_an_index_and_missing_index_are_one_line(tmp_path, capsys):
    assert main(["index", "info", str(tmp_path / "nope")]) == 2
    assert "no such index folder" in capsys.readouterr().err
    assert main(["similar", "x.jpg", "--index", str(tmp_path)]) == 2
    assert "metadata store not found" in capsys.readouterr().err


def test_an_index_keeps_the_precision_it_was_built_in(tmp_path, kaiming_tiny):
    """bf16 features differ from fp32 ones in the third decimal: an index built in bf16 is
    added to and queried in bf16, and an fp32 extractor is refused rather than mixed in."""
    from alexnet_kit.engines.cpu import native_bf16
    from alexnet_kit.engines.precision import Precision
    from alexnet_kit.features import FeatureExtractor
    from alexnet_kit.search.errors import IndexMismatch
    from alexnet_kit.search.index_settings import IndexSettings

    if not native_bf16():
        pytest.skip("this CPU has no native bf16 (amx_bf16 / avx512_bf16)")
    photos = real_photos(8)
    folder = make_folder(tmp_path / "photos", photos[:6])
    out = tmp_path / "bf16.index"
    fx = FeatureExtractor.load(kaiming_tiny, precision="bf16")
    assert fx.precision == "bf16"
    builder.build([folder], out, kaiming_tiny, extractor=fx)
    make_folder(folder, photos[6:])
    report = builder.add(out)  # no precision given: the index's own
    assert report.extracted == 2
    with SimilarityIndex.open(out) as idx:
        assert idx.extractor.precision == "bf16"
        probe = folder / photos[7].name
        ids, stored = idx.store.vectors([idx.store.row(str(probe.resolve())).id], idx.dim)
        np.testing.assert_allclose(stored[0], idx.extractor.extract_one(probe), rtol=2**-10, atol=1e-6)  # float16 store
        fp32 = FeatureExtractor.load(kaiming_tiny, precision="fp32")
        assert np.abs(fp32.extract_one(probe) - stored[0]).max() > 1e-5  # what mixing would have stored
        settings = IndexSettings.from_store(idx.store)
        assert settings.precision is Precision.BF16 and not settings.compatible(fp32)
        with pytest.raises(IndexMismatch, match="computed in bf16, this engine computes fp32"):
            settings.check(fp32, kaiming_tiny, out)


def test_a_bf16_index_is_queried_in_fp32_where_bf16_cannot_run_but_never_added_to(tmp_path, kaiming_tiny, monkeypatch):
    """Without native bf16 (here: cpuinfo's answer replaced) a query runs in fp32, whose features are
    within the gate's cosine of bf16's; adding would store fp32 vectors among bf16 ones, so it is refused."""
    from alexnet_kit.engines import cpu
    from alexnet_kit.features import FeatureExtractor
    from alexnet_kit.search.errors import IndexMismatch

    if not cpu.native_bf16():
        pytest.skip("building a bf16 index needs a CPU with native bf16 (amx_bf16 / avx512_bf16)")
    photos = real_photos(8)
    folder = make_folder(tmp_path / "photos", photos[:6])
    out = tmp_path / "bf16.index"
    builder.build([folder], out, kaiming_tiny, extractor=FeatureExtractor.load(kaiming_tiny, precision="bf16"))
    monkeypatch.setattr(cpu, "native_bf16", lambda: False)
    with SimilarityIndex.open(out) as idx:
        assert idx.extractor.precision == "fp32"
        hits = idx.query(photos[6], top=3)
        assert len(hits) == 3
    make_folder(folder, photos[6:])
    with pytest.raises(IndexMismatch, match=r"bf16\.index: its features were computed in bf16, which cannot run natively"):
        builder.add(out)
    assert main(["index", "add", str(out), "-q"]) == 2
    monkeypatch.undo()
    with SimilarityIndex.open(out) as idx:
        assert idx.extractor.precision == "bf16"  # where bf16 runs, queries use the index's own precision


def test_similar_and_index_add_take_a_pretrained_name(tmp_path, kaiming_tiny, monkeypatch, capsys):
    """`--model caffe` means the cached checkpoint, as in every other command (no download: it is there)."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    named = cache / "alexnet-kit" / "pretrained" / "caffe.safetensors"
    named.parent.mkdir(parents=True)
    shutil.copy(kaiming_tiny, named)
    photos = real_photos(6)
    folder = make_folder(tmp_path / "photos", photos[:4])
    out = tmp_path / "idx"
    builder.build([folder], out, kaiming_tiny)
    make_folder(folder, photos[4:])
    monkeypatch.chdir(tmp_path)  # no file called "caffe" here: the name, not a path
    assert main(["index", "add", str(out), "--model", "caffe", "-q"]) == 0, capsys.readouterr().err
    capsys.readouterr()
    assert main(["similar", str(photos[0]), "-i", str(out), "--model", "caffe", "-k", "2", "--json"]) == 0, capsys.readouterr().err
    assert len(json.loads(capsys.readouterr().out)["hits"]) == 2
    with SimilarityIndex.open(out) as idx:
        assert len(idx) == 6


def _legacy(out: Path, **old) -> None:
    """Rewrite an index's store as an older alexnet-kit wrote it: no "precision" key, ``old`` instead."""
    from alexnet_kit.search import files

    conn = sqlite3.connect(files.store_path(out))
    with conn:
        conn.execute("DELETE FROM settings WHERE key='precision'")
        conn.executemany("INSERT OR REPLACE INTO settings(key, value) VALUES(?, ?)",
                         [(k, json.dumps(v)) for k, v in old.items()])
    conn.close()


def test_old_index_folders_still_open_with_their_precision(folder, kaiming_tiny, tmp_path):
    """Before the precision was recorded, a bf16 index held "bf16": true and an int8 one was known by its
    model fingerprint only: both still open, read as the same Precision a new index records."""
    from alexnet_kit.engines.precision import Precision
    from alexnet_kit.features import FeatureExtractor
    from alexnet_kit.search.index_settings import IndexSettings

    out = tmp_path / "old.index"
    fx = FeatureExtractor.load(kaiming_tiny, engine="torch", precision="fp32")
    builder.build([folder], out, kaiming_tiny, extractor=fx)
    assert IndexSettings.read(out).precision is Precision.FP32
    _legacy(out, bf16=False)
    with SimilarityIndex.open(out) as idx:
        assert IndexSettings.from_store(idx.store).precision is Precision.FP32
        assert len(idx.query(real_photos(1)[0], top=2)) == 2  # an fp32 index written the old way still answers
    _legacy(out, bf16=True)
    assert IndexSettings.read(out).precision is Precision.BF16
    _legacy(out, bf16=False, model_fingerprint="ab" * 32 + "-int8-static")
    old = IndexSettings.read(out)
    assert old.precision is Precision.INT8 and not old.compatible(fx)
