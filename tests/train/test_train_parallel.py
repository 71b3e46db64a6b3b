"""The two-tower step equals the grouped step; DDP with two gloo processes equals one process."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from alexnet_kit.checkpoint import load_checkpoint
from alexnet_kit.model import AlexNet, AlexNetConfig
from alexnet_kit.towers import TowerAlexNet
from alexnet_kit.train.optim import PaperSGD
from alexnet_kit.train.parallel import grouped_state, grouped_velocity, load_grouped_velocity
from alexnet_kit.train.trainer import train_step
from helpers import TINY, TINY_WIDTHS, free_port, tiny_packed, tiny_recipe


def test_two_tower_step_equals_grouped_step():
    cfg = AlexNetConfig(num_classes=10, **TINY_WIDTHS, dropout=0.0)
    torch.manual_seed(0)
    grouped = AlexNet(cfg)
    towers = TowerAlexNet.from_grouped(grouped, ["cpu", "cpu"])
    opt_g = PaperSGD(grouped.parameters(), lr=0.01)
    opt_t = PaperSGD(towers.parameters(), lr=0.01)
    for step in range(3):
        x = torch.randn(6, 3, 224, 224, generator=torch.Generator().manual_seed(step)) * 50
        y = torch.arange(6) % 10
        lg, _ = train_step(grouped, opt_g, x, y)
        lt, _ = train_step(towers, opt_t, x, y)
        assert abs(float(lg) - float(lt)) < 1e-4
    for k, v in grouped.state_dict().items():
        torch.testing.assert_close(grouped_state(towers)[k], v, atol=2e-5, rtol=1e-4)
    vg, vt = grouped_velocity(grouped, opt_g), grouped_velocity(towers, opt_t)
    assert vg.keys() == vt.keys() and all(v.abs().sum() > 0 for v in vg.values())
    for k in vg:
        torch.testing.assert_close(vt[k], vg[k], atol=2e-6, rtol=1e-4)
    # velocities move between forms: resume a two-tower run on one device and back
    again = TowerAlexNet.from_grouped(grouped, ["cpu", "cpu"])
    opt_again = PaperSGD(again.parameters(), lr=0.01)
    load_grouped_velocity(again, opt_again, vg)
    for k, v in grouped_velocity(again, opt_again).items():
        assert torch.equal(v, vg[k])


@pytest.mark.slow
def test_ddp_two_gloo_processes_equal_one_process(tmp_path):
    data = tiny_packed(tmp_path / "packed")
    common = ["train", "--recipe", "quickstart", "--data", str(data), "--epochs", "2", "--batch-size", "4",
              "--workers", "0", "--threads", "1", "--model.dropout", "0", "--eval-batch-size", "2", "--quiet", *TINY,
              "--amp", "off"]  # fp32: the arithmetic of the two forms is compared (bf16 rounds a split batch differently)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    one = subprocess.run([sys.executable, "-m", "alexnet_kit", *common, "--out", str(tmp_path / "one")],
                         capture_output=True, text=True, env=env, timeout=300)
    assert one.returncode == 0, one.stderr[-2000:]
    torchrun = Path(sys.executable).with_name("torchrun")
    two = subprocess.run([str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", "alexnet_kit", *common,
                          "--parallel", "data", "--out", str(tmp_path / "two")],
                         capture_output=True, text=True, env=env, timeout=300)
    assert two.returncode == 0, two.stderr[-3000:]
    a, meta_a = load_checkpoint(tmp_path / "one" / "last.safetensors")
    b, meta_b = load_checkpoint(tmp_path / "two" / "last.safetensors")
    assert meta_b.provenance["world_size"] == 2 and meta_a.provenance["steps"] == meta_b.provenance["steps"] == 6  # 12 photos, batch 4, 2 epochs
    moved = 0.0
    init = AlexNet(meta_a.config)  # weights really changed, and changed the same way
    for k in a:
        torch.testing.assert_close(b[k], a[k], atol=1e-5, rtol=1e-4)
        moved = max(moved, float((a[k] - init.state_dict()[k]).abs().max()))
    assert moved > 1e-3
    # evaluation: each rank a share of the validation batches, sums all-reduced: the same
    # errors and loss as one process saw (they drive the lr drops on every rank)
    from alexnet_kit.train.training_state import latest_state, load_state

    ha = load_state(latest_state(tmp_path / "one" / "checkpoints"))["history"]
    hb = load_state(latest_state(tmp_path / "two" / "checkpoints"))["history"]
    assert len(ha) == len(hb) == 2
    for ra, rb in zip(ha, hb):
        assert ra["val_top1_err"] == rb["val_top1_err"] and ra["val_top5_err"] == rb["val_top5_err"]
        assert ra["val_loss"] == pytest.approx(rb["val_loss"], rel=1e-4)
        assert ra["train_loss"] == pytest.approx(rb["train_loss"], rel=1e-4)


@pytest.mark.slow
def test_two_tower_training_resumes_on_one_device(tmp_path):
    """--parallel model for an epoch, then --parallel none: the same as two epochs on one device."""
    from alexnet_kit.train.packed import PackedDataset
    from alexnet_kit.train.trainer import Trainer

    data = PackedDataset(tiny_packed(tmp_path / "packed"))

    def run(out, parallel, epochs, resume=None):
        r = tiny_recipe(tmp_path / out, parallel=parallel, epochs=epochs, batch_size=4, workers=0, amp="off")  # fp32, as compared
        t = Trainer(r, data, resume=resume, progress=False)
        t.setup()
        assert t.train() == "done"
        t.cleanup()
        return load_checkpoint(tmp_path / out / "last.safetensors")[0]

    run("mixed", "model", 1)
    mixed = run("mixed", "none", 2, resume="latest")
    plain = run("plain", "none", 2)
    for k in plain:
        torch.testing.assert_close(mixed[k], plain[k], atol=5e-5, rtol=1e-4)


@pytest.mark.slow
def test_one_process_group_still_runs_every_collective(tmp_path, monkeypatch):
    """torchrun with one process (the GPU check's ddp stage) must exercise the same reductions
    as two: the stop vote every SYNC_EVERY steps, the epoch-end totals and evaluation's sums."""
    import torch.distributed as dist

    from alexnet_kit.train.packed import PackedDataset
    from alexnet_kit.train.trainer import SYNC_EVERY, Trainer

    for k, v in {"WORLD_SIZE": "1", "RANK": "0", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())}.items():
        monkeypatch.setenv(k, v)
    shapes: list[tuple[int, ...]] = []
    real = dist.all_reduce

    def counting_all_reduce(t, *a, **kw):  # the real gloo reduction, recorded
        shapes.append(tuple(t.shape))
        return real(t, *a, **kw)

    monkeypatch.setattr(dist, "all_reduce", counting_all_reduce)
    data = PackedDataset(tiny_packed(tmp_path / "packed"))
    # 12 photos, batch 2: 6 steps an epoch, 3 epochs = 18 steps, so the stop vote at step 16 runs
    r = tiny_recipe(tmp_path / "out", parallel="data", device="cpu", epochs=3, batch_size=2, workers=0)
    t = Trainer(r, data, progress=False)
    try:
        t.setup()
        assert t.dist.world == 1 and dist.is_initialized()
        assert t.train() == "done"
    finally:
        t.cleanup()
    assert not dist.is_initialized()  # cleanup ends the group it joined
    assert t.global_step == 18 and SYNC_EVERY == 16
    assert shapes.count((4,)) == 3  # evaluation's sums, every epoch
    assert shapes.count((5,)) == 3  # the epoch-end totals
    assert shapes.count((1,)) >= 3 + 1  # the epoch-end stop flags and the vote at step 16
