"""The project's own commands as a new user types them: a fresh HOME, no --model, no --index.

The default model is the paper's network from BVLC's published file; here a
file in the real Caffe format (random values, peaked on the example photos)
is served from 127.0.0.1 through the documented address override
(ALEXNET_KIT_PRETRAINED_CAFFE_URL / _DIGEST), never the network.
"""
from __future__ import annotations

import hashlib
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import EXAMPLES, free_port, random_caffemodel, serve_file

pytestmark = pytest.mark.slow

PHOTO = sorted(EXAMPLES.glob("*.jpg"))[0]


def fresh_env(home: Path, **extra) -> dict:
    """A new user's environment: HOME only (XDG folders and alexnet-kit's variables unset)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XDG_", "ALEXNET_KIT_"))}
    env.update(HOME=str(home), GRADIO_ANALYTICS_ENABLED="False", **extra)
    return env


def kit(env: dict, *args, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "alexnet_kit", *map(str, args)], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=600)


def files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) if root.exists() else []


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    path = random_caffemodel(tmp_path_factory.mktemp("served") / "bvlc_alexnet.caffemodel")
    with serve_file(path) as url:
        yield dict(url=url, digest="sha1:" + hashlib.sha1(path.read_bytes()).hexdigest())


@pytest.fixture(scope="module")
def new_user(served, tmp_path_factory):
    home = tmp_path_factory.mktemp("home")
    env = fresh_env(home, ALEXNET_KIT_PRETRAINED_CAFFE_URL=served["url"], ALEXNET_KIT_PRETRAINED_CAFFE_DIGEST=served["digest"])
    return home, env


def test_classify_as_typed_fetches_the_paper_network_once_and_prints_five_imagenet_labels(new_user):
    from alexnet_kit.meta import imagenet_classes

    home, env = new_user
    r = kit(env, "classify", PHOTO, "--top", "5", cwd=home)
    assert r.returncode == 0, r.stderr[-3000:]
    lines = r.stdout.strip().splitlines()
    assert lines[0] == str(PHOTO) and len(lines) == 6
    names = set(imagenet_classes()[1])
    assert all(l.split("%", 1)[1].strip() in names for l in lines[1:]), lines
    notice = [l for l in r.stderr.splitlines() if "downloading" in l]
    assert len(notice) == 1 and "caffe" in notice[0] and "about 244 MB" in notice[0], r.stderr
    assert "127.0.0.1" in notice[0] and str(home / ".cache" / "alexnet-kit" / "pretrained") in notice[0]
    assert "Traceback" not in r.stderr
    cache = home / ".cache" / "alexnet-kit" / "pretrained"
    assert {"bvlc_alexnet.caffemodel", "caffe.safetensors"} <= set(files_under(cache))
    # the second time: no download
    again = kit(env, "classify", PHOTO, "--top", "5", cwd=home)
    assert again.returncode == 0 and "downloading" not in again.stderr and again.stdout == r.stdout
    # `info` says which model is the default, and why
    info = kit(env, "info", cwd=home)
    assert info.returncode == 0, info.stderr
    assert "default model  caffe" in info.stdout and "(built in)" in info.stdout and "in the cache" in info.stdout


def test_index_build_then_similar_as_typed(new_user):
    home, env = new_user
    r = kit(env, "index", "build", EXAMPLES, "--quiet", cwd=home)
    assert r.returncode == 0, r.stderr[-3000:]
    default = home / ".local" / "share" / "alexnet-kit" / "indexes" / "default"
    assert (default / "photos.sqlite").is_file() and str(default) in r.stdout
    s = kit(env, "similar", PHOTO, "--top", "3", cwd=home)
    assert s.returncode == 0, s.stderr[-3000:]
    hits = s.stdout.strip().splitlines()
    assert len(hits) == 3 and all(Path(h.split()[1]).parent == EXAMPLES for h in hits)
    assert all(Path(h.split()[1]) != PHOTO for h in hits)  # the photo itself is left out
    # a short name works, and `index info` lists the indexes
    named = kit(env, "similar", PHOTO, "--top", "3", "--index", "default", cwd=home)
    assert named.stdout == s.stdout
    listing = kit(env, "index", "info", cwd=home)
    assert listing.returncode == 0 and "* default" in listing.stdout and "default index: default (built in)" in listing.stdout
    unknown = kit(env, "similar", PHOTO, "--index", "holidays", cwd=home)
    assert unknown.returncode == 2 and len(unknown.stderr.strip().splitlines()) == 1 and "default" in unknown.stderr


def test_demo_as_typed_serves_both(new_user):
    """`alexnet-kit demo` alone: the default model and the default index (built by the test above)."""
    from gradio_client import Client, handle_file

    home, env = new_user
    if not (home / ".local" / "share" / "alexnet-kit" / "indexes" / "default").is_dir():
        kit(env, "index", "build", EXAMPLES, "--quiet", cwd=home)
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "alexnet_kit", "demo", "--port", str(port)], cwd=home, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    seen = ""
    try:
        deadline = time.monotonic() + 300
        while "serving" not in seen and time.monotonic() < deadline and proc.poll() is None:
            ready, _, _ = select.select([proc.stdout], [], [], 1.0)
            if ready:
                seen += os.read(proc.stdout.fileno(), 65536).decode()
        assert f"serving http://127.0.0.1:{port}/" in seen and "index" in seen and "(5 photos)" in seen, seen
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        from alexnet_kit.meta import imagenet_classes

        labels = client.predict(handle_file(str(PHOTO)), api_name="/classify")
        assert len(labels["confidences"]) == 5 and {c["label"] for c in labels["confidences"]} <= set(imagenet_classes()[1])
        gallery, hits = client.predict(handle_file(str(PHOTO)), api_name="/similar")
        assert hits and all(Path(h["file"]).parent == EXAMPLES for h in hits), hits
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            out, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
    assert "Traceback" not in seen + out.decode()


@pytest.mark.parametrize("how", ["offline", "unreachable"])
def test_without_the_network_each_command_says_one_line_and_leaves_no_partial_file(tmp_path, how):
    home = tmp_path / "home"
    home.mkdir()
    extra = ({"ALEXNET_KIT_OFFLINE": "1"} if how == "offline"
             else {"ALEXNET_KIT_PRETRAINED_CAFFE_URL": f"http://127.0.0.1:{free_port()}/bvlc_alexnet.caffemodel"})
    env = fresh_env(home, **extra)
    for args, words in [(["classify", PHOTO, "--top", "5"], "pretrained caffe --file"),
                        (["index", "build", EXAMPLES], "pretrained caffe --file"),
                        (["similar", PHOTO], "no index yet: alexnet-kit index build ~/Pictures"),
                        (["demo", "--port", free_port()], "pretrained caffe --file")]:
        r = kit(env, *args, cwd=home)
        errors = [l for l in r.stderr.strip().splitlines() if "error" in l]
        assert r.returncode != 0 and len(errors) == 1 and words in errors[0], (args, r.stderr)
        assert "Traceback" not in r.stderr
        if "--file" in words:  # it names the address too, and the other way out
            assert ("127.0.0.1" if how == "unreachable" else "dl.caffe.berkeleyvision.org") in errors[0]
            assert "--model PATH" in errors[0]
    left = files_under(home)
    assert not [f for f in left if f.endswith((".part", ".safetensors", ".caffemodel", ".sqlite", ".faiss"))], left


def test_a_config_file_sets_the_default_model(tmp_path, tiny_checkpoint):
    home = tmp_path / "home"
    (home / ".config" / "alexnet-kit").mkdir(parents=True)
    (home / ".config" / "alexnet-kit" / "config.toml").write_text(f'model = "{tiny_checkpoint}"\noffline = true\n')
    env = fresh_env(home)
    info = kit(env, "info", cwd=home)
    assert info.returncode == 0 and f"default model  {tiny_checkpoint} (model in {home}/.config/alexnet-kit/config.toml)" in info.stdout
    assert "downloads      off" in info.stdout
    r = kit(env, "classify", PHOTO, "--top", "2", "--engine", "torch", "--precision", "fp32", cwd=home)
    assert r.returncode == 0 and "class_" in r.stdout, r.stderr
    # the environment outranks the file
    env["ALEXNET_KIT_MODEL"] = str(tmp_path / "nowhere.safetensors")
    r = kit(env, "classify", PHOTO, cwd=home)
    assert r.returncode == 2 and "$ALEXNET_KIT_MODEL" in r.stderr
    # a broken file is one line naming it
    (home / ".config" / "alexnet-kit" / "config.toml").write_text('model = \n')
    r = kit(fresh_env(home), "info", cwd=home)
    assert r.returncode == 2 and "config.toml: not a readable TOML config file" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
