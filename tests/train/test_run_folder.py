"""A fresh `train` never replaces an earlier run in its folder: refused in one line before
anything is written, every file kept; --resume continues it, --overwrite replaces it."""
from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest

from alexnet_kit.errors import AlexKitError
from alexnet_kit.train.training_state import latest_state, list_states, load_state
from alexnet_kit.train.runfolder import describe, earlier_run, refuse_earlier_run, remove_run

from helpers import quickstart_photos, state_step, train_cmd

ENV = dict(os.environ, OMP_NUM_THREADS="1")
STEPS_PER_EPOCH = 3  # 6 photos of 3 classes, one of each held out: 15 training photos, batch 4


def run(cmd: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=300)


def tree_digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_what_counts_as_an_earlier_run(tmp_path):
    out = tmp_path / "run"
    (out / "packed").mkdir(parents=True)
    (out / "tensorboard").mkdir()
    (out / "tensorboard" / "events.out.tfevents.1").write_bytes(b"x")
    (out / "model.onnx").write_bytes(b"x")
    assert earlier_run(out) == []  # data, logs alone and other commands' files are not a run
    refuse_earlier_run(out, None, False)
    (out / "checkpoints").mkdir()
    for name in ("step-00000003.pt", "step-00000006.pt", "best.pt", ".step-00000009.pt.abc.tmp"):
        (out / "checkpoints" / name).write_bytes(b"x")
    (out / "last.safetensors").write_bytes(b"x")
    assert describe(earlier_run(out)) == "2 training states, best.pt, last.safetensors"
    with pytest.raises(AlexKitError, match="holds an earlier run .*--resume.*another --out.*--overwrite"):
        refuse_earlier_run(out, None, False)
    refuse_earlier_run(out, "latest", False)
    refuse_earlier_run(out, None, True)
    with pytest.raises(AlexKitError, match="give one of them"):
        refuse_earlier_run(out, "latest", True)
    remove_run(out)
    assert sorted(p.name for p in out.rglob("*")) == ["checkpoints", "model.onnx", "packed"]


@pytest.mark.slow
def test_a_used_folder_is_refused_and_overwrite_replaces_it_and_resume_continues(tmp_path):
    photos = quickstart_photos(tmp_path / "photos", per_class=6)  # packed by train into OUT/packed
    out = tmp_path / "run"
    first = run(train_cmd(photos, out, "--epochs", "1", "--workers", "0"))
    assert first.returncode == 0, first.stderr[-2000:]
    (out / "packed-notes.txt").write_text("not the run's\n")  # another command's file: never touched
    before = tree_digest(out)
    assert "checkpoints/best.pt" in before and "model.safetensors" in before and "packed/dataset.json" in before

    again = run(train_cmd(photos, out, "--epochs", "1", "--workers", "0"))
    assert again.returncode == 2 and "Traceback" not in again.stderr
    [line] = again.stderr.strip().splitlines()
    assert line.startswith(f"alexnet-kit: error: {out} holds an earlier run (1 training state, best.pt, model.safetensors")
    assert "--resume" in line and "another --out" in line and "--overwrite" in line
    assert tree_digest(out) == before  # every file of the first run, byte for byte, nothing added

    resumed = run(train_cmd(photos, out, "--epochs", "2", "--workers", "0", "--resume"))
    assert resumed.returncode == 0 and "resumed from" in resumed.stderr, resumed.stderr[-2000:]
    assert load_state(latest_state(out / "checkpoints"))["global_step"] == 2 * STEPS_PER_EPOCH

    both = run(train_cmd(photos, out, "--resume", "--overwrite"))
    assert both.returncode == 2 and "give one of them" in both.stderr

    replaced = run(train_cmd(photos, out, "--epochs", "1", "--workers", "0", "--overwrite", "--seed", "5"))
    assert replaced.returncode == 0, replaced.stderr[-2000:]
    assert "--overwrite: removed the earlier run" in replaced.stderr
    assert [state_step(p) for p in list_states(out / "checkpoints")] == [STEPS_PER_EPOCH]  # only the new run's
    assert load_state(latest_state(out / "checkpoints"))["recipe"]["seed"] == 5
    assert (out / "metrics.csv").read_text().count("\n") == 2  # header and the new run's one epoch
    assert (out / "packed-notes.txt").read_text() == "not the run's\n"
    kept = {k: v for k, v in before.items() if k.startswith("packed")}
    assert {k: v for k, v in tree_digest(out).items() if k.startswith("packed")} == kept  # the data stays
