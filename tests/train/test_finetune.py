"""Fine-tuning from a trained model: what is carried over, what is new, what stays frozen."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from helpers import ROOT, make_checkpoint


@pytest.fixture()
def parent(tmp_path, tiny_config):
    from alexnet_kit.train.finetune import load_parent

    return load_parent(make_checkpoint(tmp_path / "parent.safetensors", tiny_config, seed=3, trained=True))


def _child(parent, classes=4, seed=0):
    from alexnet_kit.train.finetune import child_config, transplant
    from alexnet_kit.train.parallel import build_grouped

    model = build_grouped(child_config(parent, classes), seed)
    return model, transplant(model, parent)


def test_weights_carried_over_exactly_and_fc8_new(parent):
    model, copied = _child(parent, classes=4)
    assert copied == ["conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7"]
    state = model.state_dict()
    for name, value in parent.state.items():
        if name.startswith("fc8."):
            continue
        assert torch.equal(state[name], value), name
    assert state["fc8.weight"].shape == (4, parent.meta.config.fc_features)
    assert parent.state["fc8.weight"].shape[0] == 10
    assert torch.count_nonzero(state["fc8.bias"]) == 0
    assert 0.005 < state["fc8.weight"].std().item() < 0.02  # §5: N(0, 0.01)


def test_architecture_comes_from_the_parent(parent):
    from alexnet_kit.errors import AlexKitError
    from alexnet_kit.train.finetune import child_config

    cfg = child_config(parent, 7, {"dropout": 0.3, "conv_channels": list(parent.meta.config.conv_channels)})
    assert cfg.num_classes == 7 and cfg.dropout == 0.3 and cfg.conv_channels == parent.meta.config.conv_channels
    with pytest.raises(AlexKitError, match="conv_channels"):
        child_config(parent, 7, {"conv_channels": (96, 256, 384, 384, 256)})


def test_parent_shape_mismatch_is_one_line(tmp_path, parent, tiny_config):
    import dataclasses

    from alexnet_kit.errors import CheckpointError
    from alexnet_kit.model import AlexNet
    from alexnet_kit.train.finetune import transplant

    wider = AlexNet(dataclasses.replace(tiny_config, fc_features=32))
    with pytest.raises(CheckpointError, match=r"parent\.safetensors: layer fc6\.weight has shape"):
        transplant(wider, parent)


def test_artifact_refused_as_parent(tmp_path):
    from alexnet_kit.errors import CheckpointError
    from alexnet_kit.train.finetune import load_parent

    fake = tmp_path / "model.onnx"
    fake.write_bytes(b"not empty")
    with pytest.raises(CheckpointError, match="needs a checkpoint"):
        load_parent(fake)


@pytest.mark.parametrize("spec, expected", [("none", ()), ("conv", ("conv1", "conv2", "conv3", "conv4", "conv5")),
                                            ("fc7,conv1", ("conv1", "fc7")), ("all", ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7"))])
def test_parse_freeze(spec, expected):
    from alexnet_kit.train.finetune import parse_freeze

    assert parse_freeze(spec) == expected


@pytest.mark.parametrize("spec", ["fc8", "conv9", ","])
def test_parse_freeze_refuses(spec):
    from alexnet_kit.errors import AlexKitError
    from alexnet_kit.train.finetune import parse_freeze

    with pytest.raises(AlexKitError, match="--freeze"):
        parse_freeze(spec)


def _steps(model, groups, n=3, lr=0.05):
    from alexnet_kit.train.optim import PaperSGD

    opt = PaperSGD(groups, lr=lr)
    torch.manual_seed(0)
    size = model.config.input_size
    for _ in range(n):
        x = torch.randn(4, 3, size, size) * 50
        y = torch.randint(0, model.config.num_classes, (4,))
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()


def test_frozen_layers_bit_identical_after_training_steps(parent):
    from alexnet_kit.train.finetune import param_groups, parse_freeze

    model, _ = _child(parent)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    _steps(model, param_groups(model, parse_freeze("conv"), 1.0))
    after = model.state_dict()
    for layer in ("conv1", "conv2", "conv3", "conv4", "conv5"):
        for kind in ("weight", "bias"):
            assert torch.equal(after[f"{layer}.{kind}"], before[f"{layer}.{kind}"]), layer
    for layer in ("fc6", "fc7", "fc8"):
        assert not torch.equal(after[f"{layer}.weight"], before[f"{layer}.weight"]), layer


def test_pretrained_lr_mult_scales_the_carried_layers_only(parent):
    """One step from zero velocity is -lr*mult*(grad + wd*w): the same gradients with mult 0.1
    move carried layers by exactly a tenth of mult 1's step, and fc8 by the same step."""
    from alexnet_kit.train.finetune import param_groups

    deltas = {}
    for mult in (1.0, 0.1):
        model, _ = _child(parent)
        model.eval()  # no dropout: the same gradients in both runs
        before = {k: v.clone() for k, v in model.state_dict().items()}
        _steps(model, param_groups(model, (), mult), n=1)
        deltas[mult] = {k: model.state_dict()[k] - before[k] for k in before}
    for name in ("conv1.weight", "fc7.weight"):
        torch.testing.assert_close(deltas[0.1][name], 0.1 * deltas[1.0][name], rtol=1e-4, atol=1e-7)  # w + v - w rounds
    torch.testing.assert_close(deltas[0.1]["fc8.weight"], deltas[1.0]["fc8.weight"], rtol=1e-5, atol=1e-9)
    assert deltas[1.0]["conv1.weight"].abs().max() > 0


def test_param_groups_on_the_two_towers(parent):
    from alexnet_kit.towers import TowerAlexNet
    from alexnet_kit.train.finetune import param_groups, parse_freeze

    model, _ = _child(parent)
    towers = TowerAlexNet.from_grouped(model, ["cpu", "cpu"])
    groups = param_groups(towers, parse_freeze("conv"), 0.1)
    frozen = [n for n, p in towers.named_parameters() if not p.requires_grad]
    assert len(frozen) == 2 * 5 * 2 and all(".conv" in n for n in frozen)
    assert sum(len(g["params"]) for g in groups) == 2 * 3 * 2


# -- end to end: `alexnet-kit train --init-from` on real photos ----------------

def _train(data, out, parent, *extra):
    import os
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "alexnet_kit", "train", "--recipe", "quickstart", "--data", str(data), "--out", str(out),
           "--epochs", "2", "--batch-size", "4", "--threads", "1", "--deterministic", "true", "--workers", "0", "--quiet",
           "--init-from", str(parent), "--freeze", "conv", "--pretrained-lr-mult", "0.1", *extra]
    return subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"), timeout=300)


@pytest.mark.slow
def test_finetune_on_quickstart_photos_resumes_exactly(tmp_path, tiny_config):
    import numpy as np

    from alexnet_kit.checkpoint import load_checkpoint, read_meta
    from alexnet_kit.classify import Classifier
    from helpers import tiny_packed

    parent_path = make_checkpoint(tmp_path / "parent.safetensors", tiny_config, seed=3, trained=True)
    parent_state, parent_meta = load_checkpoint(parent_path)
    data = tiny_packed(tmp_path / "packed")  # 3 quickstart classes, 12 training photos: 3 steps an epoch

    full = _train(data, tmp_path / "full", parent_path)
    assert full.returncode == 0, full.stderr[-2000:]
    assert "fine-tuning" in full.stderr and "frozen: conv1, conv2, conv3, conv4, conv5" in full.stderr
    child, meta = load_checkpoint(tmp_path / "full" / "last.safetensors")
    for layer in ("conv1", "conv2", "conv3", "conv4", "conv5"):  # frozen: bit for bit
        assert torch.equal(child[f"{layer}.weight"], parent_state[f"{layer}.weight"]), layer
        assert torch.equal(child[f"{layer}.bias"], parent_state[f"{layer}.bias"]), layer
    assert not torch.equal(child["fc7.weight"], parent_state["fc7.weight"])  # carried, learning at 0.1x
    assert child["fc8.weight"].shape == (3, tiny_config.fc_features)
    assert meta.config == parent_meta.config.__class__(**{**parent_meta.config.to_dict(), "num_classes": 3})
    assert meta.classes == ["Leopards", "airplanes", "watch"]
    # the parent's normalisation, not the new photos' mean image
    np.testing.assert_array_equal(meta.preprocess.mean, np.broadcast_to(parent_meta.preprocess.mean[:, None, None], (3, 256, 256)))
    parent_fp = read_meta(parent_path)[1]["weights_sha256"]
    assert meta.provenance["fine_tuned_from"]["fingerprint"] == parent_fp
    assert meta.provenance["fine_tuned_from"]["frozen"] == ["conv1", "conv2", "conv3", "conv4", "conv5"]

    # stopped after 4 of 6 steps, then resumed: bitwise the uninterrupted run
    cut = _train(data, tmp_path / "cut", parent_path, "--max-steps", "4")
    assert cut.returncode == 0, cut.stderr[-2000:]
    resumed = _train(data, tmp_path / "cut", parent_path, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    again, _ = load_checkpoint(tmp_path / "cut" / "last.safetensors")
    for name in child:
        assert torch.equal(again[name], child[name]), name

    clf = Classifier.load(tmp_path / "full" / "model.safetensors", crops=10)
    [r] = clf.classify([data.parent / "packed-src" / "watch" / sorted(p.name for p in (data.parent / "packed-src" / "watch").iterdir())[0]], top=3)
    assert r.ok and {l.name for l in r.labels} == {"Leopards", "airplanes", "watch"}


def test_freeze_without_init_from_is_one_line(tmp_path):
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "alexnet_kit", "train", "--data", "examples/quickstart-data", "--out", str(tmp_path / "o"),
                           "--freeze", "conv", "--quiet"], capture_output=True, text=True, timeout=300,
                          cwd=ROOT)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == "alexnet-kit: error: --freeze and --pretrained-lr-mult need --init-from MODEL (the model to fine-tune)"


def test_the_finetune_recipe_starts_from_published_weights():
    from alexnet_kit.train.recipe import load_recipe, validate

    r = validate(load_recipe("finetune"))
    assert (r.init_from, r.freeze, r.pretrained_lr_mult, r.lr) == ("caffe", "none", 0.1, 0.001)
