"""Ending long jobs: SIGTERM (and SIGINT) to the whole process group, as SLURM, `timeout` and
Ctrl-C send them, stop `prepare` cleanly: one line, exit 128 + the signal, the work saved,
and the rerun ends as an uninterrupted run would."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from helpers import QUICKSTART_DATA

ENV = dict(os.environ, OMP_NUM_THREADS="1")


def wait_for_file(proc: subprocess.Popen, found, what: str, timeout: float = 120) -> None:
    t0 = time.monotonic()
    while not found():
        if proc.poll() is not None:
            pytest.fail(f"ended before {what}: {proc.communicate()[1][-2000:]}")
        if time.monotonic() - t0 > timeout:
            pytest.fail(f"no {what} after {timeout} s")
        time.sleep(0.01)


def last_line(stderr: str) -> str:
    return stderr.strip().splitlines()[-1]


# -- prepare ------------------------------------------------------------------------------
@pytest.mark.slow
def test_prepare_stopped_by_sigterm_keeps_its_rows_and_a_rerun_ends_as_an_uninterrupted_one(tmp_path):
    from alexnet_kit.train.prepare import prepare

    src = tmp_path / "src"  # the 500 quickstart photos three times over (hard links): a few seconds of packing
    for c in sorted(d for d in QUICKSTART_DATA.iterdir() if d.is_dir()):
        (src / c.name).mkdir(parents=True)
        for k in range(3):
            for f in sorted(c.glob("*.jpg")):
                os.link(f, src / c.name / f"{k}-{f.name}")
    dst = tmp_path / "packed"
    cmd = [sys.executable, "-m", "alexnet_kit", "prepare", str(src), str(dst), "--workers", "1", "--quiet"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV, start_new_session=True)
    try:
        wait_for_file(proc, lambda: (dst / "errors.jsonl").exists(), "the packing")  # opened as the pool starts
        time.sleep(0.3)
        os.killpg(proc.pid, signal.SIGTERM)
        err = proc.communicate(timeout=60)[1]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 143, err[-2000:]
    assert "Traceback" not in err and len([l for l in err.splitlines() if l.startswith("alexnet-kit:")]) == 1
    done = sum(int((np.load(dst / s / "status.npy") != 0).sum()) for s in ("train", "val"))
    assert 0 < done < 1500 and not (dst / "dataset.json").exists()
    assert last_line(err) == (f"alexnet-kit: stopped by SIGTERM: {done} of 1500 photos are packed and recorded in {dst}; "
                              f"run the same command again to continue")
    again = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    prepare(src, tmp_path / "uninterrupted", workers=2, progress=False)
    for f in ("train/images.u8", "val/images.u8", "train/labels.npy", "train/status.npy", "mean.npy", "pca.npz", "classes.txt"):
        assert (dst / f).read_bytes() == (tmp_path / "uninterrupted" / f).read_bytes(), f
