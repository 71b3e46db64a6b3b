"""A path named on the command line that holds no photo is said in one line, with exit status 1,
for every command that takes photos; the photos named beside it are still worked on."""
from __future__ import annotations

import pytest

from alexnet_kit.cli import main
from helpers import EXAMPLES

ENGINE = ["--engine", "torch", "--precision", "fp32"]


@pytest.fixture
def named(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "a_directory.jpg").mkdir()  # named like a photo, a folder
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "readme.txt").write_text("no photos here")
    (tmp_path / "notes.txt").write_text("not an image")
    return {"empty": ("empty folder", tmp_path / "empty"),
            "a_directory.jpg/": ("empty folder", str(tmp_path / "a_directory.jpg") + "/"),
            "docs": ("no photos in this folder", tmp_path / "docs"),
            "notes.txt": ("not a photo", tmp_path / "notes.txt")}


def command(name: str, path, tmp_path, model) -> list[str]:
    return {"classify": ["classify", str(path)],
            "features": ["features", str(path), "--out", str(tmp_path / "f.npz"), "--quiet"],
            "index build": ["index", "build", str(path), "--out", str(tmp_path / "i"), "--quiet"]}[name] + ["--model", str(model), *ENGINE]


@pytest.mark.parametrize("cmd", ["classify", "features", "index build"])
@pytest.mark.parametrize("case", ["empty", "a_directory.jpg/", "docs", "notes.txt"])
def test_a_named_path_without_photos_is_one_line_and_exit_1(capsys, tmp_path, named, tiny_checkpoint, cmd, case):
    words, path = named[case]
    assert main(command(cmd, path, tmp_path, tiny_checkpoint)) == 1
    out, err = capsys.readouterr()
    lines = [l for l in err.strip().splitlines() if not l.startswith("alexnet-kit: engine")]
    assert len(lines) == 1 and str(path).rstrip("/") in lines[0] and words in lines[0], err
    assert "Traceback" not in err and not (tmp_path / "f.npz").exists() and not (tmp_path / "i").exists()


def test_the_photos_named_beside_it_are_still_classified(capsys, named, tiny_checkpoint):
    photo = EXAMPLES / "cat.jpg"
    assert main(["classify", str(named["empty"][1]), str(photo), "--top", "2", "--model", str(tiny_checkpoint), *ENGINE]) == 1
    out, err = capsys.readouterr()
    assert out.splitlines()[0] == str(photo) and len(out.splitlines()) == 3
    assert "empty folder" in err
