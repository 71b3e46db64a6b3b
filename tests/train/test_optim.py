"""§5 update rule and the plateau schedule (PaperSGD, PlateauSchedule)."""
from __future__ import annotations

import math

import numpy as np
import torch

from alexnet_kit.train.optim import PaperSGD, PlateauSchedule


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
