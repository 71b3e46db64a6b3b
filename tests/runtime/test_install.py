"""`pip install .` (not editable) gives a working `alexnet-kit`, outside the repository.

The wheel is built from the working tree, then installed with --no-deps into
a throwaway venv that reuses this environment's packages (torch, onnx, ...)
through a .pth line naming our site-packages: a plain path line is not a
site directory, so the editable install's finder (a .pth *hook* there) never
runs and ``alexnet_kit`` can only come from the wheel (asserted). Every
command runs from a temporary folder with no checkout above it and no shared
data, so a default that reaches into the repository fails here.
"""
from __future__ import annotations

import json
import os
import re
import select
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path
from types import SimpleNamespace

import pytest

from helpers import ROOT

pytestmark = pytest.mark.slow

# what `pip install .` reads: the distribution's metadata, setup.py's package discovery, the packages
SOURCES = ("pyproject.toml", "setup.py", "README.md", "alexnet_kit", "train", "export", "apps")


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """``.run(*args)`` runs a program of the throwaway venv (the wheel's ``alexnet-kit``) in ``.work``, outside
    the repository; ``.site`` is the venv's site-packages."""
    setuptools = pytest.importorskip("setuptools", reason="the wheel cannot be built here: setuptools is not installed")
    if tuple(int(x) for x in setuptools.__version__.split(".")[:2]) < (70, 1):  # older ones need the wheel package
        pytest.importorskip("wheel", reason=f"the wheel cannot be built here: setuptools {setuptools.__version__} "
                                            "without the wheel package")
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    junk = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build")
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name, ignore=junk)
        else:
            shutil.copy2(ROOT / name, src / name)
    built = subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", "-q", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(tmp / "dist"), str(src)],
                           capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr[-3000:]
    wheel, = (tmp / "dist").glob("alexnet_kit-*.whl")

    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    site = Path(subprocess.run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    ours = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (site / "_reuse_test_env.pth").write_text("".join(p + "\n" for p in sorted(ours)))
    # --ignore-installed: never touch the editable alexnet-kit that the .pth line makes visible
    inst = subprocess.run([py, "-m", "pip", "--disable-pip-version-check", "-q", "install", "--no-deps", "--no-index",
                           "--ignore-installed", str(wheel)], capture_output=True, text=True, timeout=300)
    assert inst.returncode == 0, inst.stderr[-3000:]

    work = tmp / "work"  # no pyproject.toml, examples/ or ../shared above it
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "ALEXNET_KIT_", "VIRTUAL_ENV"))}
    env.update(PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}", XDG_CACHE_HOME=str(tmp / "cache"),
               ALEXNET_KIT_MODEL=str(tmp / "no-default-model.safetensors"))

    def run(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
        return subprocess.run([str(venv / "bin" / args[0]), *args[1:]], cwd=work, env=env, capture_output=True, text=True,
                              timeout=timeout)

    where = run("python", "-c", "import alexnet_kit, alexnet_kit.train, torch; print(alexnet_kit.__file__); print(alexnet_kit.train.__file__)")
    assert where.returncode == 0, where.stderr
    assert all(Path(line).is_relative_to(site) for line in where.stdout.split()), where.stdout  # the wheel, not the checkout
    return SimpleNamespace(run=run, site=site, work=work, env=env, bin=venv / "bin")


def _one_line_error(r: subprocess.CompletedProcess) -> str:
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("alexnet-kit: error: "), r.stderr
    return lines[0]


def test_every_subcommand_has_help_from_the_wheel(installed):
    run = installed.run
    from alexnet_kit.cli import build_parser

    commands = sorted(build_parser()._subparsers._group_actions[0].choices)
    assert {"classify", "export", "demo", "train", "reproduce"} <= set(commands)
    version = run("alexnet-kit", "--version")
    assert version.returncode == 0 and version.stdout.startswith("alexnet-kit "), version
    for command in commands:
        r = run("alexnet-kit", command, "--help")
        assert r.returncode == 0 and r.stdout.startswith(f"usage: alexnet-kit {command}"), (command, r.stderr[-2000:])
    demo = run("alexnet-kit", "demo", "--help")
    assert "--examples DIR" in demo.stdout and "--index" in demo.stdout


def test_the_package_data_ships_in_the_wheel(installed):
    # the pretrained table and Caffe's mean image (read by `pretrained` and every --model caffe) and the class list
    r = installed.run("python", "-c", "from alexnet_kit.pretrained.registry import SOURCES; from alexnet_kit.meta import "
                      "imagenet_classes; print(*SOURCES, SOURCES['caffe'].preprocess().mean.shape, len(imagenet_classes()[1]))")
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.split() == ["caffe", "torchvision", "onnx-zoo", "(3,", "256,", "256)", "1000"]


def test_classify_and_export_work_from_the_wheel(installed, tiny_checkpoint):
    run, site, work = installed.run, installed.site, installed.work
    shipped = sorted((site / "alexnet_kit" / "data" / "photos").glob("*.jpg"))
    assert len(shipped) == 5  # the package data that lets export verify without the repository
    ckpt = shutil.copy(tiny_checkpoint, work / "tiny.safetensors")

    def top(r: subprocess.CompletedProcess) -> list[list[str]]:
        assert r.returncode == 0, r.stderr[-3000:]
        return [[t["label"] for t in res["top"]] for res in json.loads(r.stdout)["results"]]

    want = top(run("alexnet-kit", "classify", "--model", ckpt, "--engine", "torch", "--precision", "fp32", "--top", "3",
                   "--json", *map(str, shipped)))
    assert len(want) == 5 and all(len(t) == 3 for t in want)

    r = run("alexnet-kit", "export", ckpt, "--format", "onnx", "-o", "tiny.onnx", "--json")
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads(r.stdout)
    # verified on the shipped photos: no examples/ and no ../shared/data out here
    assert report["parity"]["passed"] and report["parity"]["photos"] == len(shipped), report["parity"]
    assert (work / "tiny.onnx").stat().st_size == report["bytes"]

    r = run("alexnet-kit", "classify", "--model", "tiny.onnx", "--top", "3", "--json", *map(str, shipped))
    # auto measured its candidates on the shipped photos instead of giving up for want of photos
    assert "no real photos" not in r.stderr
    if "measuring" in r.stderr:
        assert f"on {len(shipped)} photos" in r.stderr, r.stderr
    assert [t[0] for t in top(r)] == [t[0] for t in want]  # whatever auto chose passed the gate: same top-1

    r = run("alexnet-kit", "index", "build", str(shipped[0].parent), "--model", "tiny.onnx", "--out", "photos.index",
            "--engine", "onnxruntime", "--precision", "fp32", "--quiet")
    assert r.returncode == 0, r.stderr[-3000:]
    r = run("alexnet-kit", "similar", str(shipped[0]), "--index", "photos.index", "--top", "4", "--json")
    assert r.returncode == 0, r.stderr[-3000:]
    hits = json.loads(r.stdout)["hits"]
    assert {Path(h["path"]) for h in hits} == set(shipped[1:])  # the other four photos, the query itself left out
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)


def test_the_demo_serves_the_shipped_example_photos(installed, tiny_checkpoint):
    pytest.importorskip("gradio", reason="the demo needs the demo extra (gradio)")
    import socket
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = installed.work / "demo.log"
    with log.open("w") as err:  # a file, not a pipe nobody reads: Gradio's chatter must never block the server
        proc = subprocess.Popen([str(installed.bin / "alexnet-kit"), "demo", "--model", str(tiny_checkpoint),
                                 "--port", str(port), "--engine", "torch", "--precision", "fp32"],
                                cwd=installed.work, env=installed.env, stdout=subprocess.PIPE, stderr=err, text=True)
    try:
        # "alexnet-kit demo: serving URL ..." once the server is up
        line = proc.stdout.readline() if select.select([proc.stdout], [], [], 180)[0] else "(nothing in 180 s)"
        assert "serving http://127.0.0.1:" in line, (line, log.read_text()[-3000:])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/config", timeout=30) as resp:
            config = resp.read().decode()
        shipped = installed.site / "alexnet_kit" / "data" / "photos" / "cat.jpg"
        url = re.search(r'"url":\s*"([^"]+/cat\.jpg)"', config)
        assert url, "the page offers no example cat.jpg"
        with urllib.request.urlopen(url.group(1), timeout=30) as resp:
            assert resp.read() == shipped.read_bytes()
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def test_repository_only_inputs_fail_in_one_line_saying_how_to_supply_them(installed):
    run = installed.run
    line = _one_line_error(run("alexnet-kit", "train", "--recipe", "quickstart", "--epochs", "1"))
    assert "examples/quickstart-data" in line and "--data" in line
    line = _one_line_error(run("alexnet-kit", "reproduce", "fig1", "--size", "tiny"))
    assert "ALEXNET_KIT_SHARED_DATA" in line
