"""alexnet_kit.paths: package data, the checkout's examples, the shared data and the one-line errors.

Outside a checkout (an installed wheel) is tested for real in test_install.py."""
from __future__ import annotations

import re

import pytest
from PIL import Image

from alexnet_kit import paths
from alexnet_kit.errors import AlexKitError
from helpers import EXAMPLES, ROOT


def test_the_checkout_and_its_example_photos_are_found():
    assert paths.checkout() == ROOT
    assert paths.example_photos() == sorted(EXAMPLES.iterdir())


def test_the_shipped_photos_are_small_real_copies_of_the_examples_with_their_licence():
    shipped = sorted(paths.package_data("photos").glob("*.jpg"))
    assert [p.stem for p in shipped] == sorted(p.stem for p in EXAMPLES.iterdir())
    licence = (paths.package_data("photos") / "README.md").read_text()
    for p in shipped:
        assert p.name in licence
        with Image.open(p) as im, Image.open(EXAMPLES / next(e.name for e in EXAMPLES.iterdir() if e.stem == p.stem)) as full:
            assert min(im.size) == 256 and abs(im.size[0] / im.size[1] - full.size[0] / full.size[1]) < 0.01
    assert sum(p.stat().st_size for p in shipped) < 200_000


def test_shared_data_honours_the_environment_and_fails_in_one_line(tmp_path, monkeypatch):
    (tmp_path / "photos").mkdir()
    monkeypatch.setenv(paths.SHARED_DATA_ENV, str(tmp_path))
    assert paths.shared_data("photos") == tmp_path / "photos"
    assert paths.optional_shared("photos") == tmp_path / "photos"
    assert paths.optional_shared("cifar10") is None
    with pytest.raises(AlexKitError, match=rf"{re.escape(str(tmp_path))}/cifar10: not found .*{paths.SHARED_DATA_ENV}") as e:
        paths.shared_data("cifar10")
    assert "\n" not in str(e.value)


def test_repo_paths_resolve_from_here_then_from_the_checkout(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert paths.repo_path("examples/quickstart-data", "--data") == ROOT / "examples" / "quickstart-data"
    (tmp_path / "examples" / "quickstart-data").mkdir(parents=True)
    assert paths.repo_path("examples/quickstart-data", "--data").resolve() == tmp_path / "examples" / "quickstart-data"
