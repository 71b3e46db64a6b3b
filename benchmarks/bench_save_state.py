"""How long saving the paper network's full training state takes: what a stopped run waits for.

    .venv/bin/python benchmarks/bench_save_state.py                 # the paper's network, 5 saves, a temp folder
    .venv/bin/python benchmarks/bench_save_state.py --repeats 7 --dir /scratch
    .venv/bin/python benchmarks/bench_save_state.py --end-to-end 3  # also: SIGTERM to `alexnet-kit train` until it exits

On SIGTERM (SLURM pre-emption, `timeout`, torchrun's shutdown) `alexnet-kit
train` finishes its step and saves the training state before it exits, and
the sender's grace period must cover that: SLURM's default KillWait is 30 s,
torchrun waits 30 s before SIGKILL. This measures the save for the paper's
network (60,965,224 parameters, 1000 classes):

* ours: ``Trainer.save_state(wait=True)``, what the stop runs: the snapshot
  (``Trainer.state()``: weights, momentum velocities, schedule, position,
  RNG, history, recipe, copied to host memory) and the write
  (``training_state.save_state``: ``torch.save`` to a temporary file, fsync,
  rename, fsync of the folder, keep-last pruning), each timed;
* baseline: a bare ``torch.save`` of the same state to a plain file, no
  fsync (the page cache takes it; what the save costs without durability).

The trainer is built for real (a synthetic 1000-class packed set, one
training step so the velocities are real), then saved ``--repeats`` times.
``--end-to-end N`` also times the whole stop N times: ``alexnet-kit train
--recipe paper`` in its own process group on that set, SIGTERM to the group
as soon as the state of step 2 is on disk (step 3 is running), until the
process has exited: the rest of the step in progress, the save, the exit.
Prints the machine, the file size, median / min / max of each.
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe  # noqa: E402

from alexnet_kit.train import training_state as ckpt  # noqa: E402
from alexnet_kit.train.packed import PackedDataset  # noqa: E402
from alexnet_kit.train.recipe import load_recipe  # noqa: E402
from alexnet_kit.train.synthetic import write_synthetic_packed  # noqa: E402
from alexnet_kit.train.trainer import Trainer  # noqa: E402


def spread(values: list[float]) -> str:
    return f"median {statistics.median(values):6.2f} s  min {min(values):6.2f}  max {max(values):6.2f}"


def filesystem(path: Path) -> str:
    """The mount holding ``path`` (device, type) from /proc/mounts, best effort."""
    try:
        best = ("?", "?", "")
        for line in Path("/proc/mounts").read_text().splitlines():
            dev, mnt, fstype = line.split()[:3]
            if str(path.resolve()).startswith(mnt) and len(mnt) >= len(best[2]):
                best = (dev, fstype, mnt)
        free = shutil.disk_usage(path).free / 2**30
        return f"{best[0]} ({best[1]}) mounted on {best[2]}, {free:.0f} GiB free"
    except OSError:
        return "unknown"


def stop_once(data: Path, out: Path, batch: int) -> float:
    """Seconds from SIGTERM (to the group, during step 3) until `alexnet-kit train` has exited 143."""
    cmd = [sys.executable, "-m", "alexnet_kit", "train", "--recipe", "paper", "--data", str(data), "--out", str(out),
           "--device", "cpu", "--batch-size", str(batch), "--workers", "1", "--checkpoint-every", "2", "--quiet"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    marker = out / "checkpoints" / "step-00000002.pt"
    while not marker.exists():
        if proc.poll() is not None:
            raise SystemExit(f"training ended early: {proc.stderr.read()[-2000:]}")
        time.sleep(0.01)
    t0 = time.perf_counter()
    os.killpg(proc.pid, signal.SIGTERM)
    err = proc.communicate()[1]
    seconds = time.perf_counter() - t0
    if proc.returncode != 143:
        raise SystemExit(f"exit status {proc.returncode}, not 143: {err[-2000:]}")
    return seconds


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--dir", default=None, help="where to write (default: the system's temporary folder)")
    ap.add_argument("--keep", action="store_true", help="keep the scratch folder")
    ap.add_argument("--end-to-end", type=int, default=0, metavar="N", help="also time N whole stops of a training process")
    ap.add_argument("--batch", type=int, default=128, help="--end-to-end: the batch (the paper: 128)")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-save-", dir=args.dir))
    try:
        print(f"machine: {describe()}")
        print(f"disk: {filesystem(tmp)}")
        data = write_synthetic_packed(tmp / "packed", classes=1000, per_class=1, val_per_class=0, distinct=8)
        r = load_recipe("paper")
        r.out, r.data, r.device, r.workers = str(tmp / "run"), str(data), "cpu", 0
        r.batch_size, r.epochs, r.max_steps, r.checkpoint_minutes, r.keep_last = 2, 1, 1, 0, 2
        t = Trainer(r, PackedDataset(data), progress=False)
        t.setup()
        try:
            t.train()  # one step: real velocities; ends with a save, like a stop
            params = sum(p.numel() for p in t.net.parameters())
            ours_snap, ours_write, base = [], [], []
            size = 0
            for k in range(args.repeats):
                t0 = time.perf_counter()
                state = t.state()
                t1 = time.perf_counter()
                path = ckpt.save_state(t.ckpt_dir, dict(state, global_step=1000 + k), r.keep_last)
                t2 = time.perf_counter()
                ours_snap.append(t1 - t0)
                ours_write.append(t2 - t1)
                size = path.stat().st_size
                plain = tmp / "plain.pt"
                t3 = time.perf_counter()
                torch.save(state, plain)
                base.append(time.perf_counter() - t3)
                plain.unlink()
                del state
        finally:
            t.cleanup()
        total = [a + b for a, b in zip(ours_snap, ours_write)]
        print(f"the paper's network: {params:,} parameters; one training state file: {size / 1e6:.0f} MB "
              f"({size / 2**20:.0f} MiB); {args.repeats} saves")
        print(f"ours, Trainer.save_state(wait=True)       : {spread(total)}")
        print(f"   snapshot to host memory (Trainer.state): {spread(ours_snap)}")
        print(f"   write, fsync, rename (save_state)      : {spread(ours_write)}")
        print(f"baseline, torch.save, no fsync            : {spread(base)}")
        print(f"ours / baseline (median) = {statistics.median(total) / statistics.median(base):.2f}x; "
              f"{statistics.median(total):.1f} s of SLURM's default 30 s KillWait")
        if args.end_to_end:
            stops = [stop_once(data, tmp / f"e2e{k}", args.batch) for k in range(args.end_to_end)]
            print(f"whole stop, SIGTERM to exit (batch {args.batch}, {args.end_to_end} runs): {spread(stops)}")
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
