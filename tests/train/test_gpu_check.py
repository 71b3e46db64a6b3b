"""scripts/gpu-check.sh's CPU-safe parts (--cpu): the GPU check cannot rot unseen.

The same stages as on a GPU (synthetic packed set, the trainer's end-to-end
and synthetic-step speed, towers vs grouped, torchrun DDP with one process,
SIGKILL + resume bitwise, evaluate/classify/export), on a tiny network, run
from the source tree through the script's own symlink layout.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from helpers import ROOT


@pytest.mark.slow
def test_gpu_check_cpu_mode_passes_every_stage(tmp_path):
    out = tmp_path / "check"
    env = dict(os.environ, PYTHON=sys.executable, OMP_NUM_THREADS="1")
    env.pop("PYTHONPATH", None)
    run = subprocess.run(["bash", str(ROOT / "scripts" / "gpu-check.sh"), str(out), "--cpu"], capture_output=True, text=True,
                         env=env, timeout=400, cwd=tmp_path)
    res = json.loads((out / "gpu-check.json").read_text())
    failed = {k: v.get("error") for k, v in res["stages"].items() if not v.get("ok")}
    assert run.returncode == 0 and res["ok"], (failed, run.stdout[-3000:])
    assert "gpu-check-src-" in res["machine"]["imported_from"]  # the source-tree layout, not an install
    assert set(res["stages"]) == {"data", "train", "towers", "ddp", "resume", "serve"}
    log = (out / "gpu-check.log").read_text()
    assert log.count(": ok in") == 6 and "not ok in" not in log, log[-3000:]
    assert res["not_ok"] == {}
    eager = res["stages"]["train"]["runs"]["eager"]
    assert eager["images_per_s"] > 0 and eager["synthetic_step_images_per_s"] > 0
    assert res["stages"]["resume"]["resumed_bitwise_equal"] and res["stages"]["resume"]["rng_keys"] == ["torch"]
    assert res["stages"]["serve"]["evaluate_10crop"]["crops"] == 10


def test_gpu_check_refuses_without_cuda_in_one_line(tmp_path):
    pytest.importorskip("torch")
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    run = subprocess.run(["bash", str(ROOT / "scripts" / "gpu-check.sh"), str(tmp_path / "o")], capture_output=True, text=True,
                         env=dict(os.environ, PYTHON=sys.executable), timeout=120)
    assert run.returncode == 2 and "CUDA is not available" in run.stdout and "Traceback" not in run.stdout


def _run_check(tmp_path, *args):
    env = dict(os.environ, PYTHON=sys.executable, OMP_NUM_THREADS="1")
    env.pop("PYTHONPATH", None)
    return subprocess.run(["bash", str(ROOT / "scripts" / "gpu-check.sh"), str(tmp_path / "o"), "--cpu", *args],
                          capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path)


def test_a_stage_skipped_for_time_is_not_ok(tmp_path):
    # a budget under the 10 s a stage needs: every stage is skipped, none ran, so not ok
    run = _run_check(tmp_path, "--budget", "5", "--stages", "data,towers")
    res = json.loads((tmp_path / "o" / "gpu-check.json").read_text())
    assert run.returncode == 1 and res["ok"] is False, run.stdout
    assert res["not_ok"] == {"skipped": ["data", "towers"]}
    assert "NOT all ok" in run.stdout


def test_a_stage_that_never_ran_is_not_ok(tmp_path):
    # the JSON as the 480 s timeout leaves it: written after each finished stage, the rest missing
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import gpu_check
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    c = gpu_check.Check(tmp_path, cpu=True, budget=100, requested=["data", "train", "serve"])
    c.scratch.rmdir()  # made by Check, unused here
    c.results["stages"]["data"] = {"ok": True}
    c.save()
    res = json.loads((tmp_path / "gpu-check.json").read_text())
    assert res["ok"] is False and res["not_ok"] == {"missing": ["train", "serve"]}
    c.results["stages"].update(train={"ok": False, "error": "x"}, serve={"ok": True})
    c.save()
    res = json.loads((tmp_path / "gpu-check.json").read_text())
    assert res["ok"] is False and res["not_ok"] == {"failed": ["train"]}
    c.results["stages"]["train"] = {"ok": True}
    c.save()
    assert json.loads((tmp_path / "gpu-check.json").read_text())["ok"] is True


def test_unknown_stage_is_one_line_error(tmp_path):
    run = _run_check(tmp_path, "--stages", "data,nope")
    assert run.returncode == 2 and "unknown stage(s) nope" in run.stdout and "Traceback" not in run.stdout
