"""Shared fixtures: small models built on the spot (plain helpers live in helpers.py)."""
from __future__ import annotations

from pathlib import Path

import pytest

from helpers import TINY_WIDTHS, make_checkpoint


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory, monkeypatch):
    """Never touch the user's defaults from a test, and never download: the default model is a file
    that is not there (a test of the defaults sets its own), the config and index folders are the
    test run's own, and downloads are off (a test of them turns them on, against a local server)."""
    base = tmp_path_factory.getbasetemp()
    monkeypatch.setenv("ALEXNET_KIT_MODEL", str(base / "default-model.safetensors"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(base / "xdg-config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(base / "xdg-data"))
    monkeypatch.setenv("ALEXNET_KIT_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_config():
    """The paper's topology, narrow: every code path, milliseconds per step.

    Kaiming init: the paper's N(0, 0.01) makes an untrained narrow net's
    output almost independent of its input, which would let tests that
    compare predictions pass vacuously.
    """
    from alexnet_kit.model import AlexNetConfig

    return AlexNetConfig(num_classes=10, **TINY_WIDTHS, init="kaiming")


@pytest.fixture(scope="session")
def paper_checkpoint(tmp_path_factory) -> Path:
    """The paper's full network (60,965,224 parameters), untrained, on disk."""
    return make_checkpoint(tmp_path_factory.mktemp("paper") / "paper.safetensors")


@pytest.fixture(scope="session")
def kaiming_tiny(tmp_path_factory, tiny_config) -> Path:
    """The tiny topology, seed 1: untrained, but its fc7 varies from photo to photo (tiny_config's
    Kaiming init; the paper's N(0, 0.01) with bias 1 makes every untrained fc7 nearly the same vector)."""
    return make_checkpoint(tmp_path_factory.mktemp("kaiming") / "tiny.safetensors", tiny_config, seed=1)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, tiny_config) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("tiny") / "tiny.safetensors", tiny_config)
