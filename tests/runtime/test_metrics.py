"""The one place errors are counted (alexnet_kit.metrics), checked against a plain loop."""
import numpy as np
import torch

from alexnet_kit.metrics import ErrorCounter, average_crops, topk_wrong


def _loop_errors(scores: np.ndarray, y: np.ndarray, k: int) -> tuple[int, int]:
    w1 = wk = 0
    for s, t in zip(scores, y):
        order = sorted(range(len(s)), key=lambda c: -s[c])
        w1 += order[0] != t
        wk += t not in order[:k]
    return w1, wk


def test_topk_wrong_matches_a_loop_and_caps_k_at_the_classes():
    g = torch.Generator().manual_seed(0)
    for classes in (3, 10):
        scores = torch.randn(64, classes, generator=g)
        y = torch.randint(0, classes, (64,), generator=g)
        w1, w5 = topk_wrong(scores, y)
        assert (int(w1), int(w5)) == _loop_errors(scores.numpy(), y.numpy(), 5)
    assert int(topk_wrong(scores, y)[1]) > 0  # 10 classes: top-5 can miss
    assert int(topk_wrong(torch.randn(8, 3), torch.zeros(8, dtype=torch.long))[1]) == 0  # 3 classes: top-"5" never misses


def test_error_counter_sums_batches_like_one_batch():
    g = torch.Generator().manual_seed(1)
    scores, y = torch.randn(100, 7, generator=g), torch.randint(0, 7, (100,), generator=g)
    c = ErrorCounter()
    assert np.isnan(c.errors()[0])
    for i in range(0, 100, 30):
        miss = c.add(scores[i:i + 30], y[i:i + 30])  # per photo: the label is not the top-1
        assert miss.tolist() == [bool(s.argmax() != t) for s, t in zip(scores[i:i + 30], y[i:i + 30])]
    w1, w5 = _loop_errors(scores.numpy(), y.numpy(), 5)
    assert c.n == 100 and c.errors() == (w1 / 100, w5 / 100)


def test_average_crops_is_the_mean_softmax_of_each_photos_crops():
    logits = torch.randn(2 * 10, 4)
    probs = average_crops(logits, 10)
    want = torch.stack([torch.softmax(logits[i * 10:(i + 1) * 10], 1).mean(0) for i in range(2)])
    assert torch.allclose(probs, want, atol=1e-6) and torch.allclose(probs.sum(1), torch.ones(2))
