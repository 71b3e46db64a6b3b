"""The stall detector: a loss stuck at ln(classes) warns once."""
from __future__ import annotations

from alexnet_kit.train.monitor import StallDetector


def test_stall_detector_warns_at_ln_classes_only():
    s = StallDetector(1000, window=20)
    msgs = [s.update(6.9 + 0.01 * (i % 3)) for i in range(40)]
    assert sum(m is not None for m in msgs) == 1 and "ln(1000) = 6.908" in [m for m in msgs if m][0]
    t = StallDetector(1000, window=20)
    assert all(t.update(6.9 - 0.2 * i) is None for i in range(40))
