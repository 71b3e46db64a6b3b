"""Recipe switches beside the paper's recipe: bf16 on a CPU (refused where it would be emulated),
label smoothing, random-resized crops; the paper recipe stays the paper's."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from alexnet_kit.cli import main as cli_main
from alexnet_kit.errors import AlexKitError
from alexnet_kit.model import AlexNet, AlexNetConfig
from alexnet_kit.train.optim import PaperSGD
from alexnet_kit.train.packed import PackedDataset
from alexnet_kit.train.recipe import load_recipe
from alexnet_kit.train.trainer import Trainer, resolve_amp, train_step

from helpers import TINY, TINY_WIDTHS, tiny_packed, tiny_recipe


@pytest.fixture(scope="module")
def packed(tmp_path_factory) -> Path:
    return tiny_packed(tmp_path_factory.mktemp("switches") / "packed")


def run_tiny(out: Path, data: Path, **values) -> Trainer:
    r = tiny_recipe(out, batch_size=4, workers=0, threads=1, epochs=1, **values)
    t = Trainer(r, PackedDataset(data), progress=False)
    t.setup()
    try:
        t.train()
    finally:
        t.cleanup()
    return t


def test_the_paper_recipe_stays_the_papers():
    paper = load_recipe("paper")
    assert (paper.schedule, paper.label_smoothing, paper.crop, paper.budget) == ("plateau", 0.0, "paper", "")
    assert (paper.lr, paper.lr_factor, paper.lr_patience, paper.lr_max_drops, paper.pca_std) == (0.01, 0.1, 2, 3, 0.1)
    for name in ("quickstart", "caltech10", "finetune"):  # the switches are off unless a recipe turns them on
        r = load_recipe(name)
        assert (r.label_smoothing, r.crop, r.budget) == (0.0, "paper", "")


def test_bf16_on_a_cpu_without_it_is_refused_in_one_line_unless_forced(packed, tmp_path, monkeypatch, capsys):
    from alexnet_kit.engines import cpu

    monkeypatch.setattr(cpu, "native_bf16", lambda: False)
    with pytest.raises(AlexKitError, match="no native bfloat16"):
        resolve_amp("bf16", "cpu", lambda: cpu.native_bf16())
    assert resolve_amp("bf16", "cpu", lambda: False, force=True) == (torch.bfloat16, False)
    args = ["train", "--recipe", "quickstart", "--data", str(packed), "--batch-size", "4", "--threads", "1", "--workers", "0",
            "--quiet", "--max-steps", "1", "--device", "cpu", *TINY]
    assert cli_main([*args, "--out", str(tmp_path / "a"), "--amp", "bf16"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("alexnet-kit: error: --amp bf16: this CPU has no native bfloat16")
    assert "--force-amp" in err and not (tmp_path / "a" / "checkpoints").exists()
    forced = Trainer(tiny_recipe(tmp_path / "b", amp="bf16", force_amp=True), PackedDataset(packed), progress=False)
    forced._setup_runtime()
    assert forced.amp is torch.bfloat16
    from alexnet_kit.cli import build_parser
    from alexnet_kit.train.recipe import apply_overrides

    given = build_parser().parse_args(["train", "--amp", "bf16", "--force-amp"])  # a bare flag
    assert apply_overrides(load_recipe("quickstart"), given).force_amp is True
    # auto: fp32 here (bf16 would be emulated), bf16 where the CPU has AMX or AVX-512 BF16
    t = Trainer(tiny_recipe(tmp_path / "c"), PackedDataset(packed), progress=False)
    t._setup_runtime()
    assert t.amp is None
    monkeypatch.setattr(cpu, "native_bf16", lambda: True)
    t._setup_runtime()
    assert t.amp is torch.bfloat16


def test_label_smoothing_changes_the_training_loss_only():
    cfg = AlexNetConfig(num_classes=5, **TINY_WIDTHS, dropout=0.0, init="kaiming")
    x, y = torch.randn(4, 3, 224, 224) * 50, torch.tensor([0, 1, 2, 3])
    losses = {}
    for ls in (0.0, 0.1):
        torch.manual_seed(0)
        net = AlexNet(cfg)
        loss, logits = train_step(net, PaperSGD(net.parameters(), lr=0.01), x, y, label_smoothing=ls)
        assert torch.allclose(loss, F.cross_entropy(logits, y, label_smoothing=ls))  # the step's loss is the smoothed one
        losses[ls] = float(loss)
    assert losses[0.1] != losses[0.0]


def test_label_smoothing_and_random_resized_crops_run_in_the_trainer(packed, tmp_path, monkeypatch):
    from alexnet_kit.train.augment import Finisher

    boxes = []
    resized = Finisher._resized_on_cpu  # what the loader runs on a CPU

    def counted(self, photos, d):
        boxes.append(torch.from_numpy(np.stack([d.heights, d.widths], 1)))
        return resized(self, photos, d)

    monkeypatch.setattr(Finisher, "_resized_on_cpu", counted)
    t = run_tiny(tmp_path / "switched", packed, label_smoothing=0.1, crop="rrc", crop_scale=0.5)
    assert len(boxes) == 3  # every training batch resized its boxes (validation keeps the centre patch)
    areas = torch.cat(boxes).prod(1) / 256**2
    assert areas.min() >= 0.49 and areas.max() <= 1.0
    assert "val_top1_err" in t.history[-1] and t.history[-1]["train_loss"] > 0
    values = t.model_meta().provenance["recipe_values"]
    assert (values["crop"], values["crop_scale"], values["label_smoothing"]) == ("rrc", 0.5, 0.1)
