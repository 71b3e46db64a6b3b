"""Shared fixtures: real data when present, small models built on the spot."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("ALEXNET_KIT_SHARED_DATA", ROOT.parent / "shared" / "data"))
EXAMPLES = ROOT / "examples" / "photos"


def shared(*parts: str) -> Path:
    """A path in ../shared/data, or skip the test with the reason."""
    p = SHARED.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"real data not available: {p} is absent (see ../shared/data/README.md)")
    return p


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory, monkeypatch):
    """Never touch the user's default model location from a test."""
    monkeypatch.setenv("ALEXNET_KIT_MODEL", str(tmp_path_factory.getbasetemp() / "default-model.safetensors"))


@pytest.fixture(scope="session")
def tiny_config():
    """The paper's topology, narrow: every code path, milliseconds per step.

    Kaiming init: the paper's N(0, 0.01) makes an untrained narrow net's
    output almost independent of its input, which would let tests that
    compare predictions pass vacuously.
    """
    from alexnet_kit.model import AlexNetConfig

    return AlexNetConfig(num_classes=10, conv_channels=(16, 32, 48, 48, 32), fc_features=64, init="kaiming")


def make_checkpoint(path: Path, config=None, seed: int = 0, trained: bool = False) -> Path:
    from alexnet_kit.checkpoint import save_checkpoint
    from alexnet_kit.meta import ModelMeta, imagenet_classes
    from alexnet_kit.model import AlexNet, AlexNetConfig

    config = config or AlexNetConfig()
    torch.manual_seed(seed)
    model = AlexNet(config)
    if config.num_classes == 1000:
        wnids, names = imagenet_classes()
    else:
        wnids, names = None, [f"class_{i}" for i in range(config.num_classes)]
    save_checkpoint(path, model, ModelMeta(config, names, wnids, trained=trained, provenance={"test": True}))
    return path


@pytest.fixture(scope="session")
def paper_checkpoint(tmp_path_factory) -> Path:
    """The paper's full network (60,965,224 parameters), untrained, on disk."""
    return make_checkpoint(tmp_path_factory.mktemp("paper") / "paper.safetensors")


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, tiny_config) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("tiny") / "tiny.safetensors", tiny_config)
