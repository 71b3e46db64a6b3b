"""Ending long jobs: SIGTERM (and SIGINT) to the whole process group, as SLURM, `timeout` and
Ctrl-C send them, stop `train`, `prepare` and `reproduce` cleanly: one line, exit 128 + the
signal, the work saved, and the rerun ends as an uninterrupted run would."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from alexnet_kit.train.training_state import latest_state, list_states, load_state

from helpers import QUICKSTART_DATA, free_port, shared, state_step, stop_group, tiny_packed, train_cmd

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
    # errors.jsonl is opened as the pool starts; a moment later the packing is under way
    proc, err, _ = stop_group(cmd, lambda: (dst / "errors.jsonl").exists(), signal.SIGTERM, what="the packing",
                              env=ENV, just_before=lambda: time.sleep(0.3))
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


# -- train ---------------------------------------------------------------------------------
STEPS_PER_EPOCH = 3  # tiny_packed: 12 training photos, batch 4
REFERENCE_EPOCHS = 6


def run(cmd: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=300)


@pytest.fixture(scope="module")
def packed(tmp_path_factory) -> Path:
    return tiny_packed(tmp_path_factory.mktemp("signals") / "packed")


@pytest.fixture(scope="module")
def reference(packed, tmp_path_factory) -> dict[int, dict]:
    """An uninterrupted run, one process, every epoch's state kept: {step: weights at that epoch end}."""
    out = tmp_path_factory.mktemp("reference") / "run"
    r = run(train_cmd(packed, out, "--epochs", str(REFERENCE_EPOCHS), "--workers", "0", "--keep-last", "100",
                      "--checkpoint-every", "1000"))
    assert r.returncode == 0, r.stderr[-2000:]
    return {state_step(p): load_state(p)["model"] for p in list_states(out / "checkpoints")}


def assert_resumes_to(reference: dict[int, dict], cmd: list[str], out: Path, launch=None) -> None:
    """Resume to the end of the epoch the stop fell in: bitwise the reference's weights there."""
    st = load_state(latest_state(out / "checkpoints"))
    epochs = st["epoch"] + 1
    assert epochs * STEPS_PER_EPOCH in reference, f"stopped too late (epoch {epochs}) for the reference run"
    resume = cmd + ["--resume", "--epochs", str(epochs)]
    results = launch(resume) if launch else [run(resume)]
    for r in results:
        assert r.returncode == 0, r.stderr[-2000:]
    end = load_state(latest_state(out / "checkpoints"))
    assert end["global_step"] == epochs * STEPS_PER_EPOCH
    want = reference[end["global_step"]]
    for k in want:
        assert torch.equal(end["model"][k], want[k]), k


def stop_one_process(packed: Path, out: Path, workers: str, *signals: int):
    """A long run stopped by ``signals`` sent to its whole process group once the first epoch's
    state is on disk; returns (process, stderr, the newest state's step when the signal went)."""
    return stop_group(train_cmd(packed, out, "--workers", workers, "--epochs", "40", "--checkpoint-every", "1000"),
                      lambda: list_states(out / "checkpoints"), *signals, what="the first epoch's state", env=ENV,
                      just_before=lambda: state_step(latest_state(out / "checkpoints")))


@pytest.mark.slow
@pytest.mark.parametrize("workers", ["1", "0"])
def test_sigterm_to_the_group_saves_the_step_and_resumes_bitwise(packed, reference, tmp_path, workers):
    out = tmp_path / "run"
    proc, err, before = stop_one_process(packed, out, workers, signal.SIGTERM)
    assert proc.returncode == 143, err[-2000:]
    assert "Traceback" not in err and "killed by signal" not in err
    st = load_state(latest_state(out / "checkpoints"))
    assert st["global_step"] > before  # saved at the stop, not the last periodic state
    assert last_line(err) == (f"alexnet-kit: stopped by SIGTERM after step {st['global_step']}: saved "
                              f"{latest_state(out / 'checkpoints')}; run the same command with --resume to continue")
    assert_resumes_to(reference, train_cmd(packed, out, "--workers", workers), out)


@pytest.mark.slow
def test_a_second_signal_aborts_at_once(packed, tmp_path):
    out = tmp_path / "run"
    # both at once: the second arrives long before the step in progress ends
    proc, err, before = stop_one_process(packed, out, "1", signal.SIGTERM, signal.SIGINT)
    assert proc.returncode in (130, 143), err[-2000:]  # 128 + the signal handled second
    assert "Traceback" not in err and last_line(err).startswith("alexnet-kit: aborted (SIG")
    # nothing saved at the abort; the states written before it are intact and resume
    assert state_step(latest_state(out / "checkpoints")) == before
    load_state(latest_state(out / "checkpoints"))


# -- train: SIGTERM to every rank of a data-parallel run ------------------------------------
def launch_ranks(cmd: list[str], wait: bool = True):
    """Two gloo ranks in one new process group (as torchrun's workers are in the job's)."""
    port = str(free_port())
    procs = []
    for rank in (0, 1):
        env = dict(ENV, RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", LOCAL_WORLD_SIZE="2",
                   MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
        # rank 0 leads a new process group (in this session, so that rank 1 may join it)
        group = procs[0].pid if procs else 0
        procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                                      process_group=group))
    if not wait:
        return procs
    outs = [p.communicate(timeout=300) for p in procs]
    return [subprocess.CompletedProcess(cmd, p.returncode, o, e) for p, (o, e) in zip(procs, outs)]


@pytest.mark.slow
def test_sigterm_to_every_rank_stops_them_at_one_step_and_resumes_bitwise(packed, tmp_path):
    ddp = ["--parallel", "data", "--workers", "0", "--checkpoint-every", "1000"]
    ref = tmp_path / "reference"
    results = launch_ranks(train_cmd(packed, ref, *ddp, "--epochs", "4", "--keep-last", "100"))
    assert [r.returncode for r in results] == [0, 0], results[0].stderr[-2000:] + results[1].stderr[-2000:]
    reference = {state_step(p): load_state(p)["model"] for p in list_states(ref / "checkpoints")}

    out = tmp_path / "run"
    procs = launch_ranks(train_cmd(packed, out, *ddp, "--epochs", "40"), wait=False)
    try:
        wait_for_file(procs[0], lambda: list_states(out / "checkpoints"), "the first epoch's state")
        before = state_step(latest_state(out / "checkpoints"))
        os.killpg(procs[0].pid, signal.SIGTERM)  # every rank, as SLURM signals a job step
        errs = [p.communicate(timeout=120)[1] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert [p.returncode for p in procs] == [143, 143], errs[0][-2000:] + errs[1][-2000:]
    assert "Traceback" not in errs[0] + errs[1]
    st = load_state(latest_state(out / "checkpoints"))
    assert st["global_step"] > before
    assert last_line(errs[0]).startswith(f"alexnet-kit: stopped by SIGTERM after step {st['global_step']}: saved ")
    assert last_line(errs[1]) == (f"alexnet-kit: rank 1 stopped by SIGTERM after step {st['global_step']}, "
                                  f"with every rank (rank 0 saved the training state)")
    assert_resumes_to(reference, train_cmd(packed, out, *ddp), out, launch=launch_ranks)


# -- reproduce ----------------------------------------------------------------------------
@pytest.mark.slow
def test_reproduce_stopped_by_sigterm_keeps_finished_runs_and_continues(tmp_path):
    shared("caltech101")
    out = tmp_path / "results"
    cmd = [sys.executable, "-m", "alexnet_kit", "reproduce", "ablations", "--size", "tiny", "--variants", "full,no_lrn",
           "--seeds", "2", "--epochs", "40", "--out", str(out)]
    env = dict(ENV, XDG_CACHE_HOME=str(tmp_path / "cache"))
    # two worker processes (one per seed); the signal lands once a first variant is done
    proc, err, _ = stop_group(cmd, lambda: list(out.glob("*.partial.*.json")), signal.SIGTERM, what="a finished variant",
                              env=env)
    assert proc.returncode == 143, err[-2000:]
    assert "Traceback" not in err and not (out / "ablations.json").exists()
    kept = sorted(p.name for p in out.glob("*.partial.*.json"))
    assert last_line(err) == (f"alexnet-kit: stopped by SIGTERM: finished stages kept in {out} ({', '.join(kept)}); "
                              f"the same command continues from them")
    again = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "kept from an interrupted run" in again.stdout and (out / "ablations.json").exists()
    assert not list(out.glob("*.partial.*.json"))
