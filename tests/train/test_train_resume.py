"""Exact resume: SIGKILL mid-run + --resume ends bitwise equal to an uninterrupted run;
Ctrl-C saves a checkpoint and exits cleanly; the trained model classifies directly."""
from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from alexnet_kit.checkpoint import load_checkpoint, read_meta
from alexnet_kit.classify import Classifier
from alexnet_kit.train.training_state import list_states, load_state

import helpers
from helpers import QUICKSTART_DATA, tiny_packed

ENV = dict(os.environ, OMP_NUM_THREADS="1")


def train_cmd(data: Path, out: Path, *extra: str) -> list[str]:
    return helpers.train_cmd(data, out, "--epochs", "4", "--checkpoint-every", "2", *extra)


def wait_for_state(folder: Path, proc: subprocess.Popen, min_step: int, timeout: float = 120) -> None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        states = list_states(folder)
        if states and int(states[-1].stem.split("-")[1]) >= min_step:
            return
        if proc.poll() is not None:
            pytest.fail(f"training ended before it could be interrupted: {proc.stderr.read()[-2000:]}")
        time.sleep(0.01)
    pytest.fail("no checkpoint appeared")


@pytest.mark.slow
def test_sigkill_then_resume_is_bitwise_identical(tmp_path):
    data = tiny_packed(tmp_path / "packed")  # 12 training photos: 3 steps per epoch, 12 steps
    full = subprocess.run(train_cmd(data, tmp_path / "full", "--workers", "0"), capture_output=True, text=True, env=ENV, timeout=300)
    assert full.returncode == 0, full.stderr[-2000:]
    # the same run with an augmentation worker process, killed without warning mid-epoch
    proc = subprocess.Popen(train_cmd(data, tmp_path / "cut", "--workers", "1"), stderr=subprocess.PIPE, text=True, env=ENV)
    wait_for_state(tmp_path / "cut" / "checkpoints", proc, min_step=4)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    last = list_states(tmp_path / "cut" / "checkpoints")[-1]
    killed_at = load_state(last)["global_step"]
    assert 4 <= killed_at < 12
    resumed = subprocess.run(train_cmd(data, tmp_path / "cut", "--workers", "1", "--resume"), capture_output=True, text=True, env=ENV, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"step {killed_at}" in resumed.stderr
    a, meta_a = load_checkpoint(tmp_path / "full" / "last.safetensors")
    b, meta_b = load_checkpoint(tmp_path / "cut" / "last.safetensors")
    for k in a:
        assert torch.equal(a[k], b[k]), k  # bitwise
    assert meta_a.provenance["steps"] == meta_b.provenance["steps"] == 12
    # the logged history is the same too (losses and errors of every epoch)
    drop = lambda r: {k: v for k, v in r.items() if k not in ("images_per_s", "seconds")}  # noqa: E731
    ha = load_state(list_states(tmp_path / "full" / "checkpoints")[-1])["history"]
    hb = load_state(list_states(tmp_path / "cut" / "checkpoints")[-1])["history"]
    assert [drop(r) for r in ha] == [drop(r) for r in hb]


@pytest.mark.slow
def test_ctrl_c_saves_and_resume_finishes_with_a_usable_model(tmp_path):
    data = tiny_packed(tmp_path / "packed")
    out = tmp_path / "run"
    proc = subprocess.Popen(train_cmd(data, out, "--workers", "1", "--checkpoint-every", "1000", "--epochs", "30"),
                            stderr=subprocess.PIPE, text=True, env=ENV)
    wait_for_state(out / "checkpoints", proc, min_step=3)  # the end of epoch 1
    proc.send_signal(signal.SIGINT)
    err = proc.communicate(timeout=120)[1]
    assert proc.returncode == 130, err[-2000:]
    assert "saved" in err and "--resume" in err and "Traceback" not in err
    st = load_state(list_states(out / "checkpoints")[-1])
    assert 3 <= st["global_step"] < 90
    r = subprocess.run(train_cmd(data, out, "--resume", "--epochs", str(st["epoch"] + 2)), capture_output=True, text=True, env=ENV, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    for name in ("metrics.csv", "metrics.jsonl", "curves.png", "model.safetensors", "last.safetensors"):
        assert (out / name).is_file(), name
    rows = (out / "metrics.csv").read_text().splitlines()
    assert rows[0].startswith("epoch,step,lr,train_loss") and len(rows) == 1 + st["epoch"] + 2
    meta, _ = read_meta(out / "model.safetensors")
    assert meta.trained and meta.classes == ["Leopards", "airplanes", "watch"]
    assert meta.provenance["recipe"] == "quickstart" and meta.provenance["val_top1_err"] is not None
    assert meta.preprocess.mean.shape == (3, 256, 256)
    # alexnet-kit classify takes it as it is
    photo = sorted((QUICKSTART_DATA / "watch").glob("*.jpg"))[0]
    res = Classifier.load(out / "model.safetensors", crops=10).classify_one(photo, top=3)
    assert res.ok and len(res.labels) == 3 and {l.name for l in res.labels} <= set(meta.classes)
    # a training state cannot run code: weights_only refuses a pickled object
    evil = tmp_path / "checkpoints" / "step-00000099.pt"
    evil.parent.mkdir()
    torch.save({"version": 1, "payload": Path("x")}, evil)
    from alexnet_kit.errors import CheckpointError

    with pytest.raises(CheckpointError, match="not a readable training state"):
        load_state(evil)
