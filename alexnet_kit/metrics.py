"""The paper's error measures, in one place: crop averaging and top-k error.

Used by serving (:class:`alexnet_kit.classify.Classifier`), export parity,
training, evaluation and every experiment, so a number in a log, a table and
the docs is always counted the same way.

* §4.1: at test time the softmax outputs of a photo's crops are averaged.
* §6: error is reported as top-1 and top-5, "the fraction of test images for
  which the correct label is not among the five labels considered most
  probable by the model".
"""
from __future__ import annotations

import torch


def average_crops(logits: torch.Tensor, crops: int) -> torch.Tensor:
    """§4.1: the mean of each photo's crops' softmax, (N * crops, C) logits -> (N, C) probabilities."""
    probs = torch.softmax(logits.float(), dim=1)
    return probs.reshape(-1, crops, probs.shape[1]).mean(1)


def topk_misses(scores: torch.Tensor, y: torch.Tensor, k: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    """Per photo, whether the label is not the top-1 / not among the top-k: two (N,) bool tensors
    on ``scores``' device (no host sync).

    ``scores``: logits or probabilities, (N, C); ``k`` is capped at C (a 3-class net's top-5 is its top-3).
    """
    y = y.to(scores.device, non_blocking=True)
    top = scores.topk(min(k, scores.shape[1]), 1).indices
    return top[:, 0] != y, ~(top == y[:, None]).any(1)


def topk_wrong(scores: torch.Tensor, y: torch.Tensor, k: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    """(top-1 misses, top-k misses) of a batch, as counts on ``scores``' device (no host sync)."""
    miss1, missk = topk_misses(scores, y, k)
    return miss1.sum(), missk.sum()


class ErrorCounter:
    """Running top-1/top-5 misses over batches; ``errors()`` gives fractions (0..1).

    The counts stay on the scores' device until read, so counting never stalls a GPU."""

    def __init__(self, k: int = 5):
        self.k = k
        self.n = 0
        self.wrong1: torch.Tensor | int = 0
        self.wrongk: torch.Tensor | int = 0

    def add(self, scores: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Count a batch; returns its per-photo top-1 misses ((N,) bool, on the device), e.g. for per-class errors."""
        miss1, missk = topk_misses(scores, y, self.k)
        self.wrong1 = self.wrong1 + miss1.sum()
        self.wrongk = self.wrongk + missk.sum()
        self.n += len(y)
        return miss1

    def errors(self) -> tuple[float, float]:
        """(top-1 error, top-k error) as fractions; NaN before any photo was counted."""
        if not self.n:
            return float("nan"), float("nan")
        return int(self.wrong1) / self.n, int(self.wrongk) / self.n
