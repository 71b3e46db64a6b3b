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
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


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
    assert (out / "gpu-check.log").read_text().count("ok in") >= 6
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
