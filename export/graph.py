"""The module every format exports: one pass, two outputs."""
from __future__ import annotations

import torch
from torch import nn

from alexnet_kit.model import AlexNet


class LogitsAndFeatures(nn.Module):
    """``x -> (logits, fc7 features after ReLU)``: classification and similarity search
    from one artifact and one forward pass (§6.1 uses the fc7 activations)."""

    def __init__(self, model: AlexNet):
        super().__init__()
        self.model = model.eval()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model.logits_and_features(x)


def example_input(model: AlexNet, batch: int = 2) -> torch.Tensor:
    n = model.config.input_size
    return torch.randn(batch, 3, n, n, generator=torch.Generator().manual_seed(0)) * 50
