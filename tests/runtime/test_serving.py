"""OpenVINO engine, engine/precision choice and the verified-precision gate.

Real runtimes throughout: onnxruntime and OpenVINO run the exported files,
the gate is measured on real photos, and "OpenVINO absent" is a real
subprocess in which ``import openvino`` fails.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import EXAMPLES, ROOT, run_cli, shared

from alexnet_kit.engines import choose, cpu
from alexnet_kit.engines.gate import Gate
from alexnet_kit.engines.measurements import read_measurements, sidecar_path
from alexnet_kit.engines.precision import Precision
from alexnet_kit.errors import AlexKitError

pytest.importorskip("openvino", reason="the OpenVINO tests need openvino (pip install openvino)")


@pytest.fixture(scope="module")
def artifacts(tiny_checkpoint, tmp_path_factory):
    """tiny.onnx and its int8 export tiny.int8.onnx side by side, as `alexnet-kit export` names them."""
    from alexnet_kit.export import export_checkpoint

    out = tmp_path_factory.mktemp("serving")
    fp32 = export_checkpoint(tiny_checkpoint, "onnx", out / "tiny.onnx", photos=[EXAMPLES]).path
    int8 = export_checkpoint(tiny_checkpoint, "onnx", out / "tiny.int8.onnx", int8=True, photos=[EXAMPLES], min_top1=0.0).path
    return fp32, int8


@pytest.fixture(scope="module")
def gate_photos():
    """Real photos for the gate: ../shared/data's ImageNet samples (60 of them), else the examples."""
    try:
        folder = shared("imagenet-samples")
        files = sorted(folder.iterdir())
        return files[:: max(1, len(files) // 60)][:60]
    except pytest.skip.Exception:
        return sorted(EXAMPLES.iterdir())


def select(model, engine="auto", precision="auto", **kw):
    """What the CLI's defaults choose (a wish given: what is not measured yet is measured)."""
    return choose(model, engine, precision, **kw)


def real_crops(meta, photos, crops=1):
    from alexnet_kit.export.verify import load_photos

    return meta.preprocess.crops(load_photos(photos, meta.preprocess.resize, meta.preprocess.resize_mode), crops)


def test_openvino_fp32_matches_pytorch_to_1e4(artifacts, tiny_checkpoint):
    from alexnet_kit.checkpoint import load_model
    from alexnet_kit.engines.openvino import OpenVinoEngine

    model, _ = load_model(tiny_checkpoint)
    for batch in (10, 80):  # latency hint (one request) and throughput hint (the batch split over streams)
        engine = OpenVinoEngine(artifacts[0], precision="fp32", batch=batch)
        assert engine.precision == "fp32" and "fp32" in engine.description
        assert engine.hint == ("LATENCY" if batch < 32 or engine.threads == 1 else "THROUGHPUT")
        x = torch.randn(13, 3, 224, 224, generator=torch.Generator().manual_seed(1)) * 40
        logits, feats = engine.logits_and_features(x)
        with torch.inference_mode():
            ref_logits, ref_feats = model.logits_and_features(x)
        assert logits.shape == (13, 10) and feats.shape == (13, 64)
        assert (logits - ref_logits).abs().max() < 1e-4
        # fc7 reaches ~100 here: 1e-4 relative to its scale is the same float32 rounding
        assert (feats - ref_feats).abs().max() < 1e-4 * max(1.0, float(ref_feats.abs().max()))
        assert engine.fingerprint == load_engine_fingerprint(artifacts[0])


def load_engine_fingerprint(path):
    from alexnet_kit.engines import load_engine

    return load_engine(path).fingerprint


def test_openvino_reports_threads_from_the_affinity_mask(artifacts):
    from alexnet_kit.engines.openvino import OpenVinoEngine, usable_cores

    engine = OpenVinoEngine(artifacts[0], batch=10)
    assert engine.threads == usable_cores() == len(os.sched_getaffinity(0))
    assert f"{engine.threads} threads pinned" in engine.description
    # what ran is read back from the compiled model, not echoed from the request
    assert str(engine.compiled.get_property("INFERENCE_PRECISION_HINT")).lower() in ("<type: 'float32'>", "f32", "float32")


@pytest.mark.skipif(not cpu.native_bf16(), reason="this CPU has neither amx_bf16 nor avx512_bf16")
def test_bf16_and_int8_agree_with_fp32_on_real_photos(artifacts, tiny_checkpoint, gate_photos):
    from alexnet_kit.checkpoint import load_model
    from alexnet_kit.engines.openvino import OpenVinoEngine

    model, meta = load_model(tiny_checkpoint)
    x = real_crops(meta, gate_photos)
    with torch.inference_mode():
        ref = model(x)
    for engine in (OpenVinoEngine(artifacts[0], precision="bf16"), OpenVinoEngine(artifacts[1])):
        logits = engine.logits(x)
        agree = float((logits.argmax(1) == ref.argmax(1)).float().mean())
        assert engine.precision in (Precision.BF16, Precision.INT8)
        assert agree >= 0.9, (engine.description, agree)
        assert not torch.equal(logits, ref)  # really another arithmetic, not fp32 again


def test_bf16_is_refused_without_native_support(artifacts, monkeypatch):
    monkeypatch.setattr(cpu, "native_bf16", lambda: False)
    with pytest.raises(AlexKitError, match="bf16 refused: .* neither amx_bf16 nor avx512_bf16"):
        select(artifacts[0], precision="bf16")
    from alexnet_kit.engines.candidates import candidates

    assert all(c.precision != "bf16" for c in candidates(Path(artifacts[0]))[0])


def test_cpu_flags_come_from_proc_cpuinfo(tmp_path):
    fake = tmp_path / "cpuinfo"
    fake.write_text("processor\t: 0\nmodel name\t: Example CPU 9000\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16\n")
    name, flags = cpu.cpuinfo(str(fake))
    assert name == "Example CPU 9000" and "avx512_bf16" in flags and "amx_bf16" not in flags


def test_auto_measures_once_stores_and_picks_the_fastest_passing(artifacts, gate_photos, capsys):
    fp32, _ = artifacts
    sidecar_path(fp32).unlink(missing_ok=True)
    said = []
    engine = select(fp32, photos=gate_photos, log=said.append)
    assert said and "measuring" in said[0]
    stored = read_measurements(fp32)
    names = {(m["engine"], m["precision"]) for m in stored}
    expected = {("onnxruntime", "fp32"), ("openvino", "fp32"), ("onnxruntime", "int8"), ("openvino", "int8")}
    if cpu.native_bf16():
        expected.add(("openvino", "bf16"))
    assert names == expected
    for m in stored:
        assert m["photos"] == len(gate_photos) and m["machine"]["key"] == cpu.machine_class()["key"]
        assert 0 <= m["top1_agreement"] <= 1 and m["crops_per_s"] > 0
    gate = Gate()
    passing = [m for m in stored if gate.failure(m) is None]
    best = max(passing, key=lambda m: m["crops_per_s"])
    assert engine.reason.startswith(f"{best['engine']} {best['precision']}")
    # the second time nothing is measured: the stored numbers decide
    again = []
    engine2 = select(fp32, photos=gate_photos, log=again.append)
    assert again == [] and engine2.reason == engine.reason
    assert json.loads(sidecar_path(fp32).read_text())["version"] == 1


def test_a_precision_failing_the_gate_is_refused(artifacts, gate_photos):
    """An impossibly strict threshold (agreement above 100%) makes the real measurement fail."""
    fp32, _ = artifacts
    with pytest.raises(AlexKitError, match=r"int8 refused by the precision gate on this CPU: top-1 agreement with fp32 .* < 100\.10%"):
        select(fp32, engine="onnxruntime", precision="int8", gate=Gate(min_top1=1.001), photos=gate_photos)
    with pytest.raises(AlexKitError, match="fc7 cosine"):
        select(fp32, engine="openvino", precision="int8", gate=Gate(min_cosine=1.5), photos=gate_photos)
    # auto falls back to what passes: fp32 always does (it is the reference)
    e = select(fp32, gate=Gate(min_top1=1.001), photos=gate_photos)
    assert e.reason.split(",")[0] in ("onnxruntime fp32", "openvino fp32")


def test_cli_gate_refusal_is_one_line(artifacts):
    fp32, _ = artifacts
    env = {**os.environ, "ALEXNET_KIT_GATE_MIN_TOP1": "1.001"}
    proc = run_cli("classify", "--model", fp32, "--precision", "int8", "--engine", "onnxruntime", EXAMPLES / "cat.jpg", env=env)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    errors = [l for l in proc.stderr.splitlines() if "error" in l]
    assert len(errors) == 1 and "refused by the precision gate" in errors[0], proc.stderr


def test_impossible_combinations_are_one_line(artifacts, tiny_checkpoint):
    fp32, int8 = artifacts
    with pytest.raises(AlexKitError, match="torch runs checkpoints"):
        select(fp32, engine="torch")
    with pytest.raises(AlexKitError, match="onnxruntime and openvino run .onnx"):
        select(tiny_checkpoint, engine="openvino")
    lonely = Path(str(fp32).replace("tiny.onnx", "lonely.onnx"))
    lonely.write_bytes(Path(fp32).read_bytes())
    with pytest.raises(AlexKitError, match=r"int8 needs the int8 export beside it: lonely\.int8\.onnx"):
        select(lonely, precision="int8")


def test_the_int8_file_named_directly_is_verified_against_its_fp32_sibling(artifacts, gate_photos):
    fp32, int8 = artifacts
    e = select(int8, engine="onnxruntime", photos=gate_photos)
    assert e.precision.startswith("int8") and "top-1 agreement with fp32" in e.reason
    assert Path(e.path) == Path(int8)


def test_classify_cli_says_which_engine_runs(artifacts):
    fp32, _ = artifacts
    proc = run_cli("classify", "--model", fp32, "--engine", "openvino", "--precision", "fp32", "--json", EXAMPLES / "cat.jpg")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["engine"].startswith("openvino") and doc["precision"] == "fp32"
    assert "alexnet-kit: engine: openvino fp32" in proc.stderr


@pytest.mark.slow  # over 2.5 s on 2 cores: out of make test-fast
def test_info_prints_the_stored_measurements(artifacts, gate_photos):
    fp32, _ = artifacts
    select(fp32, photos=gate_photos)
    proc = run_cli("info", fp32)
    assert proc.returncode == 0, proc.stderr
    assert "native bf16: " + ("yes" if cpu.native_bf16() else "no") in proc.stdout
    lines = [l for l in proc.stdout.splitlines() if l.startswith("serving ")]
    assert any("onnxruntime fp32 on this CPU" in l and "reference" in l for l in lines), proc.stdout
    assert any("openvino int8 on this CPU" in l and "top-1 agreement" in l for l in lines), proc.stdout


@pytest.mark.slow
def test_without_openvino_everything_runs_on_onnxruntime(artifacts, tmp_path):
    """A real subprocess where `import openvino` raises ImportError (a shim first on PYTHONPATH)."""
    fp32, _ = artifacts
    shim = tmp_path / "shim" / "openvino"
    shim.mkdir(parents=True)
    (shim / "__init__.py").write_text("raise ImportError('openvino made unimportable for this test')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(shim.parent), str(ROOT)])}
    check = subprocess.run([sys.executable, "-c", "from alexnet_kit.engines.candidates import engine_available as a; "
                            "print(a('openvino'), a('onnxruntime'))"], capture_output=True, text=True, env=env, timeout=120)
    assert check.stdout.split() == ["False", "True"], check.stderr
    proc = run_cli("classify", "--model", fp32, "--json", EXAMPLES / "cat.jpg", env=env)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["engine"].startswith("onnxruntime") and doc["results"][0]["error"] is None
    index = tmp_path / "idx"
    built = run_cli("index", "build", EXAMPLES, "--out", index, "--model", fp32, "-q", env=env)
    assert built.returncode == 0 and "engine: onnxruntime" in built.stderr, built.stderr
    forced = run_cli("classify", "--model", fp32, "--engine", "openvino", EXAMPLES / "cat.jpg", env=env)
    assert forced.returncode == 2 and "openvino is not installed here" in forced.stderr
    assert len(forced.stderr.strip().splitlines()) == 1


def test_checkpoint_auto_and_forced_torch(tiny_checkpoint, gate_photos, tmp_path):
    import shutil

    ckpt = tmp_path / "copy.safetensors"
    shutil.copy(tiny_checkpoint, ckpt)
    e = select(ckpt, engine="torch", precision="fp32")
    assert e.precision == "fp32" and "reference" in e.reason
    e = select(ckpt, photos=gate_photos).open()
    kinds = {m["precision"] for m in read_measurements(ckpt)}
    assert kinds == ({"fp32", "bf16"} if cpu.native_bf16() else set())
    x = real_crops(e.meta, gate_photos[:4])
    assert e.logits(x).dtype == torch.float32
    assert np.isfinite(e.features(x).numpy()).all()


@pytest.mark.slow
def test_index_build_and_demo_take_the_same_choice(artifacts, tmp_path, gate_photos):
    """The index builder and the demo run the engine the options ask for (the whole path, not only classify)."""
    from alexnet_kit.apps.service import DemoService
    from alexnet_kit.search import SimilarityIndex

    fp32, _ = artifacts
    index = tmp_path / "ov.index"
    proc = run_cli("index", "build", EXAMPLES, "--out", index, "--model", fp32, "--engine", "openvino", "--precision", "fp32", "-q")
    assert proc.returncode == 0, proc.stderr
    assert "alexnet-kit: engine: openvino fp32" in proc.stderr
    with SimilarityIndex.open(index) as idx:
        assert idx.info()["photos"] == len(list(EXAMPLES.iterdir()))
    service = DemoService.load(fp32, index, engine="openvino", precision="fp32")
    try:
        assert service.classifier.engine.description.startswith("openvino")
        labels = service.classify(service.read_photo(EXAMPLES / "cat.jpg"))
        assert len(labels) == 5
        hits = service.similar(EXAMPLES / "cat.jpg", top=2)
        assert hits and Path(hits[0].path).name == "cat.jpg"
    finally:
        service.close()
    # with an index built in fp32, auto may not pick int8 (another model's features)
    service = DemoService.load(fp32, index, engine="auto", precision="auto")
    try:
        assert service.selection.precision is not Precision.INT8
    finally:
        service.close()


def test_auto_without_real_photos_keeps_the_reference_and_says_why(artifacts, tmp_path, monkeypatch):
    import shutil

    fp32, _ = artifacts
    alone = tmp_path / "alone.onnx"
    shutil.copy(fp32, alone)
    empty = tmp_path / "no-photos"
    empty.mkdir()
    monkeypatch.setenv("ALEXNET_KIT_GATE_PHOTOS", str(empty))
    e = select(alone)
    assert e.reason.startswith("onnxruntime fp32: no real photos here") and e.precision == "fp32"
    assert read_measurements(alone) == []
    if cpu.native_bf16():  # a precision asked for by name cannot be verified: refused, not assumed
        with pytest.raises(AlexKitError, match="no real photos to verify"):
            select(alone, engine="openvino", precision="bf16")


def test_a_new_batch_size_retimes_speed_without_rerunning_the_gate(artifacts, gate_photos, tmp_path):
    """The gate's verdict is kept per model, CPU kind and precision; another batch size only re-times."""
    import shutil

    fp32 = tmp_path / "copy.onnx"
    shutil.copy(artifacts[0], fp32)
    shutil.copy(artifacts[1], tmp_path / "copy.int8.onnx")
    said = []
    select(fp32, photos=gate_photos, batch=80, log=said.append)
    assert said and "measuring" in said[0]
    first = {(m["engine"], m["precision"]): m for m in read_measurements(fp32)}
    said.clear()
    e = select(fp32, photos=gate_photos, batch=7, log=said.append)
    assert not any("measuring" in s for s in said), said
    assert any("timing" in s and "at 7 crops a call" in s for s in said), said
    after = read_measurements(fp32)
    assert len(after) == len(first)  # one entry per engine and precision, not one per batch size
    gate = Gate()
    for m in after:
        old = first[(m["engine"], m["precision"])]
        assert (m["top1_agreement"], m["fc7_cosine"], m["measured_at"]) == (
            old["top1_agreement"], old["fc7_cosine"], old["measured_at"])
        assert "80" in m["speeds"]
        if gate.failure(m) is None:
            assert m["speeds"]["7"] > 0
    assert "at 7 a call" in e.reason
    said.clear()
    select(fp32, photos=gate_photos, batch=7, log=said.append)
    assert said == []  # both stored now


@pytest.mark.slow  # over 2.5 s on 2 cores: out of make test-fast
def test_info_skips_a_malformed_stored_entry(artifacts, gate_photos, tmp_path):
    import shutil

    fp32 = tmp_path / "hand-edited.onnx"
    shutil.copy(artifacts[0], fp32)
    select(artifacts[0], photos=gate_photos)  # stored once per module: real entries to copy
    good = read_measurements(artifacts[0])
    assert good
    doc = {"version": 1, "model": fp32.name,
           "measurements": [{"engine": "openvino"}, {"machine": "not a dict", "engine": "x", "precision": "fp32"},
                            {**good[0], "top1_agreement": "high"}, good[0]]}
    sidecar_path(fp32).write_text(json.dumps(doc))
    assert read_measurements(fp32) == [good[0]]
    proc = run_cli("info", fp32)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert sum(l.startswith("serving ") for l in proc.stdout.splitlines()) == 1, proc.stdout


def test_an_engine_that_cannot_run_on_the_gpu_is_refused_not_ignored(artifacts, tiny_checkpoint):
    """Refused before anything loads, so no GPU is needed to check it."""
    fp32, _ = artifacts
    with pytest.raises(AlexKitError, match=r"--engine openvino: on cuda tiny\.onnx runs on onnxruntime"):
        select(fp32, engine="openvino", device="cuda")
    with pytest.raises(AlexKitError, match=r"--engine torch: on cuda tiny\.onnx runs on onnxruntime"):
        select(fp32, engine="torch", device="cuda")
    with pytest.raises(AlexKitError, match=r"--engine onnxruntime: on cuda:0 tiny\.safetensors runs on torch"):
        select(tiny_checkpoint, engine="onnxruntime", device="cuda:0")


def test_the_python_api_says_on_stderr_when_it_measures(artifacts, gate_photos, tmp_path, capsys, monkeypatch):
    import shutil

    from alexnet_kit.classify import Classifier

    fp32 = tmp_path / "api.onnx"
    shutil.copy(artifacts[0], fp32)
    shutil.copy(artifacts[1], tmp_path / "api.int8.onnx")
    monkeypatch.setenv("ALEXNET_KIT_GATE_PHOTOS", str(Path(gate_photos[0]).parent))
    Classifier.load(fp32, engine="auto", crops=1)
    err = capsys.readouterr().err
    assert "alexnet-kit: measuring" in err and "api.onnx.serving.json" in err, err
