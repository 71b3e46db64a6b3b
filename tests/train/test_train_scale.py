"""Training at scale, what a CPU can show of it: resume in any form, pickling by path, no msync
per chunk, ranks that agree to stop, background checkpoints with hard links, amp fallback,
deterministic set-up, crop and flip on the device equal to the CPU path."""
from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from alexnet_kit.checkpoint import load_checkpoint
from alexnet_kit.model import AlexNet, AlexNetConfig
from alexnet_kit.train import training_state as ckpt
from alexnet_kit.train.augment import crop_flip, draw, pack_draw
from alexnet_kit.train.loader import EpochBatches, make_loader
from alexnet_kit.train.optim import PaperSGD
from alexnet_kit.train.packed import PackedDataset
from alexnet_kit.train.trainer import Trainer, deterministic_setup, resolve_amp, train_step

from helpers import QUICKSTART_DATA, TINY, TINY_WIDTHS, augment_case, free_port, tiny_packed, tiny_recipe

ENV = dict(os.environ, OMP_NUM_THREADS="1")


@pytest.fixture(scope="module")
def packed(tmp_path_factory) -> Path:
    return tiny_packed(tmp_path_factory.mktemp("scale") / "packed")


def local_recipe(out: Path, **values):
    """One deterministic epoch of the tiny recipe, batch 4, in this process on one thread."""
    return tiny_recipe(out, **{"batch_size": 4, "workers": 0, "threads": 1, "epochs": 1, "deterministic": True, **values})


def run_trainer(r, data, resume=None) -> Trainer:
    t = Trainer(r, PackedDataset(data), resume=resume, progress=False)
    t.setup()
    try:
        assert t.train() == "done"
    finally:
        t.cleanup()
    return t


# -- resume in any form; background, time-based saves and hard links ------------------------
@pytest.mark.slow
def test_state_with_cuda_rng_resumes_on_cpu_and_best_is_a_hard_link(packed, tmp_path):
    # checkpoint_minutes ~0: every step is due, so the time-based path writes mid-epoch states
    first = run_trainer(local_recipe(tmp_path / "a", checkpoint_minutes=1e-9, keep_last=10), packed)
    states = ckpt.list_states(first.ckpt_dir)
    assert [int(p.stem.split("-")[1]) for p in states] == [1, 2, 3]  # steps 1, 2 by time; 3 at the epoch end
    end = states[-1]
    # best.pt and model.safetensors are the files just written, not second copies
    assert os.stat(first.ckpt_dir / "best.pt").st_ino == os.stat(end).st_ino
    assert os.stat(first.out / "model.safetensors").st_ino == os.stat(first.out / "last.safetensors").st_ino
    st = ckpt.load_state(end)
    assert set(st["rng"]) == {"torch"}  # no per-GPU RNG states saved
    # a state from an 8-GPU run: one CUDA generator state per GPU it had
    st["rng"]["cuda"] = [torch.zeros(16, dtype=torch.uint8) for _ in range(8)]
    moved = tmp_path / "from-8-gpus.pt"
    torch.save(st, moved)
    resumed = run_trainer(local_recipe(tmp_path / "b", epochs=2), packed, resume=str(moved))
    plain = run_trainer(local_recipe(tmp_path / "c", epochs=2), packed)
    assert resumed.global_step == plain.global_step == 6
    a, _ = load_checkpoint(resumed.out / "last.safetensors")
    b, _ = load_checkpoint(plain.out / "last.safetensors")
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_background_writer_is_atomic_ordered_and_surfaces_errors(tmp_path):
    w = ckpt.BackgroundWriter()
    state = {"global_step": 7, "model": {"w": torch.arange(4.0)}}
    assert w.submit(ckpt.save_state, tmp_path, state, 2) is not None  # returns at once; the thread writes
    w.wait()
    assert torch.equal(ckpt.load_state(tmp_path / "step-00000007.pt")["model"]["w"], torch.arange(4.0))
    assert not list(tmp_path.glob(".*.tmp"))  # atomic: nothing half-written left beside
    best = ckpt.link_best(tmp_path, tmp_path / "step-00000007.pt")
    assert os.stat(best).st_ino == os.stat(tmp_path / "step-00000007.pt").st_ino
    for step in (8, 9):  # keep-last-2 prunes step 7; best.pt keeps its data
        w.submit(ckpt.save_state, tmp_path, {"global_step": step}, 2)
    w.wait()
    assert [p.name for p in ckpt.list_states(tmp_path)] == ["step-00000008.pt", "step-00000009.pt"]
    assert ckpt.load_state(best)["global_step"] == 7
    w.submit(lambda: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        w.wait()
    w.close()


# -- workers never receive the dataset's contents -------------------------------------------
def test_a_split_pickles_by_path_and_workers_fork(packed):
    sp = PackedDataset(packed).split("train")
    blob = pickle.dumps(sp)
    assert len(blob) < 2048, len(blob)  # the images alone are 12 x 196 KB
    back = pickle.loads(blob)
    assert np.array_equal(back.take(np.arange(len(sp))), sp.take(np.arange(len(sp))))
    assert np.array_equal(back.labels, sp.labels) and back.files == sp.files
    ds = EpochBatches(sp, batch=4, seed=0, epoch=0, crop=224, train=True)
    assert len(pickle.dumps(ds)) < 4096
    assert make_loader(ds, workers=1).multiprocessing_context.get_start_method() == "fork"
    # a batch from a worker process equals one computed in the parent. In a fresh process:
    # forking pytest's own process after other tests loaded OpenVINO/TBB crashes it
    code = (
        "import sys, torch; from alexnet_kit.train.packed import PackedDataset; "
        "from alexnet_kit.train.loader import EpochBatches, make_loader; "
        "ds = EpochBatches(PackedDataset(sys.argv[1]).split('train'), batch=4, seed=0, epoch=0, crop=224, train=True); "
        "x, y, d = next(iter(make_loader(ds, workers=1))); x0, y0, d0 = ds[0]; "
        "print(torch.equal(x, x0) and torch.equal(y, y0) and torch.equal(d, d0))"
    )
    out = subprocess.run([sys.executable, "-c", code, str(packed)], capture_output=True, text=True, env=ENV, timeout=120)
    assert out.stdout.strip() == "True", out.stderr[-2000:]


# -- no msync of the whole mapping per chunk -------------------------------------------------
def test_pack_workers_do_not_msync(tmp_path, monkeypatch):
    from alexnet_kit.train import prepare as prep

    root = QUICKSTART_DATA / "watch"
    photos = sorted(root.glob("*.jpg"))[:3]
    (tmp_path / "train").mkdir()
    with open(tmp_path / "train" / "images.u8", "wb") as f:
        f.truncate(3 * 64 * 64 * 3)

    def no_flush(self):
        raise AssertionError("a worker msynced the whole mapping")

    monkeypatch.setattr(np.memmap, "flush", no_flush)
    prep._init_worker(str(tmp_path), 64, {"train": 3})
    split, results = prep._pack_chunk(("train", [(i, str(p)) for i, p in enumerate(photos)]))
    assert [st for _, st, _ in results] == [1, 1, 1]
    prep._W.clear()


def test_prepare_workers_follow_the_cpus_this_process_may_use(tmp_path):
    from alexnet_kit.train.prepare import _cgroup1_quota, _cgroup2_quota, available_cpus

    assert 1 <= available_cpus() <= len(os.sched_getaffinity(0))
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert _cgroup2_quota(tmp_path / "cpu.max") == 1.5
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert _cgroup2_quota(tmp_path / "cpu.max") is None
    (tmp_path / "cpu.cfs_quota_us").write_text("400000\n")
    (tmp_path / "cpu.cfs_period_us").write_text("100000\n")
    assert _cgroup1_quota(tmp_path / "cpu.cfs_quota_us") == 4.0
    # an affinity mask of one CPU (what `taskset -c 0` or a container's cpuset gives)
    code = "import os; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}); from alexnet_kit.train.prepare import available_cpus; print(available_cpus())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "1", out.stderr


# -- Ctrl-C on one rank stops every rank at the same step ------------------------------------
@pytest.mark.slow
def test_a_signal_to_one_rank_stops_both_and_rank_0_saves(packed, tmp_path):
    out = tmp_path / "run"
    port = free_port()
    cmd = [sys.executable, "-m", "alexnet_kit", "train", "--recipe", "quickstart", "--data", str(packed), "--out", str(out),
           "--epochs", "40", "--batch-size", "4", "--workers", "0", "--threads", "1", "--parallel", "data",
           "--checkpoint-every", "2", "--quiet", *TINY]
    procs = []
    for rank in (0, 1):
        env = dict(ENV, RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", LOCAL_WORLD_SIZE="2",
                   MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env))
    try:
        t0 = time.monotonic()
        while not ckpt.list_states(out / "checkpoints") and time.monotonic() - t0 < 120:
            assert procs[0].poll() is None, procs[0].communicate()[1][-2000:]
            time.sleep(0.05)
        procs[1].send_signal(signal.SIGINT)  # rank 1 only: rank 0 never saw a signal
        errs = [p.communicate(timeout=90)[1] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    # both stop for the signal rank 1 got: 128 + SIGINT; rank 0 saves and says so in one line
    assert [p.returncode for p in procs] == [130, 130], errs[0][-2000:] + errs[1][-2000:]
    assert "saved" in errs[0] and "--resume" in errs[0] and "Traceback" not in errs[0] + errs[1]
    st = ckpt.load_state(ckpt.latest_state(out / "checkpoints"))
    assert st["global_step"] < 120  # stopped early, at a step both agreed on
    assert st["global_step"] % 16 == 0 or st["batch"] == 0


# -- mixed precision and deterministic set-up -------------------------------------------------
@pytest.mark.parametrize("setting,device,bf16,want", [
    ("auto", "cuda", True, (torch.bfloat16, False)),
    ("auto", "cuda", False, (torch.float16, True)),  # V100 / T4: fp16 with loss scaling
    ("auto", "cpu", False, (None, False)),  # a CPU without native bf16: fp32
    ("auto", "cpu", True, (torch.bfloat16, False)),  # AMX / AVX-512 BF16: bf16 autocast
    ("fp16", "cuda", True, (torch.float16, True)),
    ("bf16", "cpu", True, (torch.bfloat16, False)),
    ("off", "cuda", True, (None, False)),
])
def test_amp_auto_falls_back_to_fp16_with_scaling_without_bf16(setting, device, bf16, want):
    assert resolve_amp(setting, device, lambda: bf16) == want


def test_amp_bf16_on_a_gpu_without_it_is_one_clear_error():
    from alexnet_kit.errors import AlexKitError

    with pytest.raises(AlexKitError, match="no bfloat16"):
        resolve_amp("bf16", "cuda", lambda: False)


def test_a_scaled_step_runs_the_paper_update():
    cfg = AlexNetConfig(num_classes=10, **TINY_WIDTHS, dropout=0.0, init="kaiming")
    torch.manual_seed(0)
    net = AlexNet(cfg)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    opt = PaperSGD(net.parameters(), lr=0.01)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    x, y = torch.randn(4, 3, 224, 224) * 50, torch.arange(4)
    loss, _ = train_step(net, opt, x, y, torch.bfloat16, scaler=scaler)
    assert torch.isfinite(loss) and scaler.get_scale() == 2.0**10
    # the unscaled gradient drove the update: the same step without a scaler gives the same weights
    torch.manual_seed(0)
    again = AlexNet(cfg)
    again.load_state_dict(before)
    train_step(again, PaperSGD(again.parameters(), lr=0.01), x, y, torch.bfloat16)
    for k, v in net.state_dict().items():
        torch.testing.assert_close(v, again.state_dict()[k], atol=1e-6, rtol=1e-4)


def test_deterministic_sets_the_cublas_workspace_before_cuda(monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    try:
        deterministic_setup()
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
        assert torch.are_deterministic_algorithms_enabled()
    finally:
        torch.use_deterministic_algorithms(False)


# -- at scale: crop and flip on the device, equal to the CPU path -----------------------------
def test_device_pass_on_whole_photos_equals_the_cpu_path():
    photos, fin, d = augment_case()
    assert d.flips.any() and not d.flips.all()
    cpu = fin.from_photos([p for p in photos], d)  # what CPU workers compute
    whole = fin(torch.from_numpy(photos), pack_draw(d), channels_last=True)  # the GPU path, on the CPU device
    assert whole.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(whole, cpu, atol=1e-4, rtol=1e-5)
    cut = fin(crop_flip(photos, d, 224), d)  # patches cut beforehand: the same
    torch.testing.assert_close(cut, cpu, atol=1e-4, rtol=1e-5)
    centre = draw(16, 256, 224, None)
    torch.testing.assert_close(fin(torch.from_numpy(photos), pack_draw(centre)), fin.from_photos(list(photos), centre), atol=1e-4, rtol=1e-5)


def test_divergence_is_still_caught_with_the_losses_read_in_windows(packed, tmp_path):
    """The losses reach the host a window late (no per-step sync), but a non-finite one still
    stops the run with one line naming its step, before the epoch's state is written."""
    from alexnet_kit.errors import AlexKitError

    t = Trainer(local_recipe(tmp_path / "div", lr=1e12, epochs=3), PackedDataset(packed), progress=False)
    t.setup()
    try:
        with pytest.raises(AlexKitError, match=r"training diverged: loss nan at step \d+"):
            t.train()
    finally:
        t.cleanup()
    assert not ckpt.list_states(t.ckpt_dir)
