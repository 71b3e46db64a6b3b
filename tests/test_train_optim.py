"""§5 update rule and schedule; §4.1 augmentation; the recipe files."""
from __future__ import annotations

import math

import numpy as np
import torch

from alexnet_kit.model import AlexNetConfig
from alexnet_kit.preprocess import Preprocess
from alexnet_kit.train.augment import Finisher, crop_flip, draw
from alexnet_kit.train.monitor import StallDetector
from alexnet_kit.train.optim import PaperSGD, PlateauSchedule
from alexnet_kit.train.recipe import _MODEL_FIELDS, available, load_recipe


def test_paper_update_rule_as_printed_including_after_an_lr_drop():
    torch.manual_seed(0)
    w0 = torch.randn(5, 3)
    grads = [torch.randn(5, 3) for _ in range(6)]
    lrs = [0.01, 0.01, 0.01, 0.001, 0.001, 0.001]
    p = torch.nn.Parameter(w0.clone())
    opt = PaperSGD([p], lr=0.01, momentum=0.9, weight_decay=5e-4)
    w, v = w0.double(), torch.zeros(5, 3, dtype=torch.float64)
    for i, (g, lr) in enumerate(zip(grads, lrs)):
        opt.set_lr(lr)
        p.grad = g.clone()
        opt.step()
        if i == 2:
            p_at_3 = p.detach().clone()
        v = 0.9 * v - 0.0005 * lr * w - lr * g.double()  # §5, literally
        w = w + v
    np.testing.assert_allclose(p.detach().double().numpy(), w.numpy(), rtol=0, atol=1e-6)
    # torch's SGD keeps lr outside the velocity: equal while lr is constant, not after the drop
    q = torch.nn.Parameter(w0.clone())
    sgd = torch.optim.SGD([q], lr=0.01, momentum=0.9, weight_decay=5e-4)
    for i, (g, lr) in enumerate(zip(grads, lrs)):
        for group in sgd.param_groups:
            group["lr"] = lr
        q.grad = g.clone()
        sgd.step()
        if i == 2:  # constant lr so far: the two rules agree
            assert torch.allclose(q.detach(), p_at_3, atol=1e-6)
    assert not torch.allclose(q.detach(), p.detach(), atol=1e-5)


def test_plateau_schedule_divides_by_ten_at_most_three_times():
    s = PlateauSchedule(0.01, factor=0.1, patience=2, max_drops=3)
    errors = [0.9, 0.8, 0.8, 0.8] + [0.8] * 20
    drops = [s.step(e) for e in errors]
    assert sum(drops) == 3 and math.isclose(s.lr, 1e-5)
    assert drops[:4] == [False, False, False, True]
    t = PlateauSchedule(0.01)
    t.load_state_dict(s.state_dict())
    assert t.state_dict() == s.state_dict()


def test_centre_view_equals_the_runtime_preprocessing():
    rng = np.random.default_rng(0)
    photos = rng.integers(0, 256, (3, 256, 256, 3), dtype=np.uint8)
    mean = rng.uniform(0, 255, (3, 256, 256)).astype(np.float32)
    d = draw(3, 256, 224, None)
    x = Finisher(mean, np.ones(3), np.eye(3), 224)(crop_flip(photos, d, 224), d)
    # what classify feeds the network for one crop: training and serving agree
    np.testing.assert_allclose(x.numpy(), Preprocess(mean=mean).crops(photos, 1).numpy(), atol=1e-4)


def test_random_crops_flips_and_pca_noise():
    rng = np.random.default_rng(1)
    photos = rng.integers(0, 256, (64, 256, 256, 3), dtype=np.uint8)
    mean = np.zeros((3, 256, 256), np.float32)
    vecs = np.linalg.qr(rng.standard_normal((3, 3)))[0].astype(np.float32)
    vals = np.array([300.0, 30.0, 3.0], np.float32)
    d = draw(64, 256, 224, np.random.default_rng([7, 0, 0]))
    assert 0 <= d.tops.min() and d.tops.max() <= 32 and 10 < d.flips.sum() < 54
    x = Finisher(mean, vals, vecs, 224)(crop_flip(photos, d, 224), d).numpy()
    for i in (0, 1, 2):
        patch = photos[i, d.tops[i]:d.tops[i] + 224, d.lefts[i]:d.lefts[i] + 224].astype(np.float32)
        if d.flips[i]:
            patch = patch[:, ::-1]
        offset = vecs @ (d.alphas[i] * vals / 255.0)  # §4.1 P (alpha * lambda), lambda on the 0..1 scale
        np.testing.assert_allclose(x[i], (patch + offset).transpose(2, 0, 1), atol=1e-3)
    assert abs(float(d.alphas.std()) - 0.1) < 0.03  # a_i ~ N(0, 0.1)
    again = draw(64, 256, 224, np.random.default_rng([7, 0, 0]))
    assert (again.tops == d.tops).all() and (again.alphas == d.alphas).all()


def test_stall_detector_warns_at_ln_classes_only():
    s = StallDetector(1000, window=20)
    msgs = [s.update(6.9 + 0.01 * (i % 3)) for i in range(40)]
    assert sum(m is not None for m in msgs) == 1 and "ln(1000) = 6.908" in [m for m in msgs if m][0]
    t = StallDetector(1000, window=20)
    assert all(t.update(6.9 - 0.2 * i) is None for i in range(40))


def test_recipes_load_and_match_the_paper():
    assert {"paper", "quickstart", "caltech10"} <= set(available())
    paper = load_recipe("paper")
    assert (paper.batch_size, paper.lr, paper.momentum, paper.weight_decay, paper.epochs, paper.lr_max_drops, paper.lr_factor) == (128, 0.01, 0.9, 5e-4, 90, 3, 0.1)
    assert paper.model_config(1000) == AlexNetConfig()  # the paper's network, 60,965,224 parameters
    quick = load_recipe("quickstart")
    cfg = quick.model_config(5)
    assert cfg.input_size == 224 and cfg.towers == 2 and quick.data == "examples/quickstart-data"
    # every model field can be overridden from the command line
    defaults = {k: v for k, v in AlexNetConfig().to_dict().items() if k != "num_classes"}
    assert set(_MODEL_FIELDS) == set(defaults)
    assert all(isinstance(defaults[k], kind) for k, kind in _MODEL_FIELDS.items())


def test_cpu_fast_path_equals_the_batched_device_path():
    rng = np.random.default_rng(3)
    photos = rng.integers(0, 256, (16, 256, 256, 3), dtype=np.uint8)
    mean = rng.uniform(0, 255, (3, 256, 256)).astype(np.float32)
    vecs = np.linalg.qr(rng.standard_normal((3, 3)))[0]
    fin = Finisher(mean, np.array([500.0, 50.0, 5.0]), vecs, 224, std=(60.0, 61.0, 62.0))
    d = draw(16, 256, 224, np.random.default_rng(5))
    assert d.flips.any() and not d.flips.all()
    fast = fin.from_photos([p for p in photos], d)
    batched = fin(crop_flip(photos, d, 224), d)
    torch.testing.assert_close(fast, batched, atol=1e-4, rtol=1e-5)
