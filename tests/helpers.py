"""What more than one test file needs: repository paths, the shared-data skip, small models and data sets.

Tests import from here (``from helpers import ...``; pyproject.toml puts tests/
on pytest's import path), never from conftest.py or from another test module.
The builders of awkward photos (badinput.py) and of the published weight
formats (pretrained_files.py) sit next to this file.
"""
from __future__ import annotations

import shutil
import socket
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch

from alexnet_kit import paths

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples" / "photos"
QUICKSTART_DATA = ROOT / "examples" / "quickstart-data"

# The tiny topology: the paper's layers, narrow (every code path, milliseconds per step), as
# AlexNetConfig fields and as `alexnet-kit train` options.
TINY_WIDTHS = dict(conv_channels=(16, 32, 48, 48, 32), fc_features=64)
TINY = ["--model.conv_channels", ",".join(map(str, TINY_WIDTHS["conv_channels"])),
        "--model.fc_features", str(TINY_WIDTHS["fc_features"])]


def shared(*parts: str) -> Path:
    """A path in the shared data, found as the package finds it ($ALEXNET_KIT_SHARED_DATA, else
    ../shared/data beside the checkout), or skip the test with the reason."""
    p = paths.optional_shared(*parts)
    if p is None:
        root = paths.shared_data_root()
        where = root.joinpath(*parts) if root else "/".join(parts) + " in the shared data"
        pytest.skip(f"real data not available: {where} is absent (see ../shared/data/README.md; "
                    f"${paths.SHARED_DATA_ENV} names another copy)")
    return p


def photo_paths() -> list[Path]:
    """The repository's example photos, plus the shared data's photos/ when present."""
    extra = paths.optional_shared("photos")
    return sorted(EXAMPLES.iterdir()) + (sorted(extra.iterdir()) if extra else [])


def run_cli(*args, env=None) -> subprocess.CompletedProcess:
    """`python -m alexnet_kit ARGS` in a fresh process: exit status, stdout and stderr as text."""
    return subprocess.run([sys.executable, "-m", "alexnet_kit", *map(str, args)], capture_output=True, text=True,
                          timeout=300, env=env)


@contextmanager
def serve_file(path: Path):
    """``path`` served over HTTP on 127.0.0.1 (any URL path answers with it): yields its URL. For the
    download tests: the address override (ALEXNET_KIT_PRETRAINED_<NAME>_URL) points here, never the network."""
    import http.server
    import threading

    body = path.read_bytes()

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/{path.name}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def random_caffemodel(path: Path) -> Path:
    """bvlc_alexnet in Caffe's real (V1) file format with random values, peaked on the example photos."""
    from alexnet_kit.pretrained.caffe import write_caffemodel
    from pretrained_files import caffe_weights, source_case

    state = source_case("caffe", sorted(EXAMPLES.iterdir()), scale_on=None).state
    write_caffemodel(path, caffe_weights(state), "v1")
    return path


def stop_group(cmd: list, ready, *signals: int, what: str = "the job under way", env=None, just_before=None,
               wait: float = 240):
    """Run ``cmd`` in a session of its own, and once ``ready()`` holds send each of ``signals`` to its whole
    process group, as `timeout`, SLURM and systemd do. Returns (process, stderr, what ``just_before()``
    returned right before the signals). The group is killed if it outlives the test."""
    import os
    import signal
    import time

    proc = subprocess.Popen([str(c) for c in cmd], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + wait
        while not ready():
            if proc.poll() is not None:
                pytest.fail(f"ended before {what}: {proc.communicate()[1][-2000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"no {what} after {wait} s")
            time.sleep(0.01)
        noted = just_before() if just_before else None
        for sig in signals:
            os.killpg(proc.pid, sig)
        err = proc.communicate(timeout=120)[1]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    return proc, err, noted


def free_port() -> int:
    """A local TCP port nobody listens on (now)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_checkpoint(path: Path, config=None, seed: int = 0, trained: bool = False) -> Path:
    """A checkpoint of AlexNet(config) (default: the paper's network) with seed's initial weights; 1000
    classes get ImageNet's names, fewer get class_0, class_1, ..."""
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


def quickstart_photos(dst: Path, per_class: int = 4, classes=("Leopards", "watch", "airplanes")) -> Path:
    """A folder of class folders: the first ``per_class`` real photos of each quickstart class."""
    for c in classes:
        (dst / c).mkdir(parents=True, exist_ok=True)
        for p in sorted((QUICKSTART_DATA / c).glob("*.jpg"))[:per_class]:
            shutil.copy(p, dst / c / p.name)
    return dst


def tiny_packed(dst: Path, per_class: int = 6) -> Path:
    """A packed training set of three quickstart classes, a third of it validation."""
    from alexnet_kit.train.prepare import prepare

    src = quickstart_photos(dst.parent / (dst.name + "-src"), per_class)
    prepare(src, dst, val_fraction=1 / 3, workers=2, progress=False)
    return dst


@contextmanager
def demo_server(checkpoint: Path, index: Path):
    """The Gradio demo over (checkpoint, index) on a free local port: yields (app, service), closes both."""
    from alexnet_kit.apps.demo import launch
    from alexnet_kit.apps.service import DemoService

    service = DemoService.load(checkpoint, index)
    app = launch(service, port=free_port(), block=False, quiet=True)
    try:
        yield app, service
    finally:
        app.close()
        service.close()


def train_cmd(data: Path, out: Path, *extra: str) -> list[str]:
    """`alexnet-kit train` of the tiny topology on ``data``, deterministic, batch 4, one thread, quiet."""
    return [sys.executable, "-m", "alexnet_kit", "train", "--recipe", "quickstart", "--data", str(data), "--out", str(out),
            "--batch-size", "4", "--threads", "1", "--deterministic", "true", "--quiet", *TINY, *extra]


def state_step(path: Path) -> int:
    """The step of a training state file (``step-00000012.pt`` -> 12)."""
    return int(path.stem.split("-")[1])


def tiny_recipe(out: Path, **values):
    """The quickstart recipe on the tiny topology without dropout, writing to ``out``; ``values`` set other fields."""
    from alexnet_kit.train.recipe import load_recipe

    r = load_recipe("quickstart")
    r.out = str(out)
    r.model = dict(r.model, **TINY_WIDTHS, dropout=0.0)
    for k, v in values.items():
        setattr(r, k, v)
    return r


def augment_case():
    """16 random 256x256 photos, a Finisher with PCA noise and per-channel std, and a random draw
    (crops, flips, alphas) for them."""
    from alexnet_kit.train.augment import Finisher, draw

    rng = np.random.default_rng(3)
    photos = rng.integers(0, 256, (16, 256, 256, 3), dtype=np.uint8)
    mean = rng.uniform(0, 255, (3, 256, 256)).astype(np.float32)
    vecs = np.linalg.qr(rng.standard_normal((3, 3)))[0]
    fin = Finisher(mean, np.array([500.0, 50.0, 5.0]), vecs, 224, std=(60.0, 61.0, 62.0))
    return photos, fin, draw(16, 256, 224, np.random.default_rng(5))


def lrn_by_the_formula(a, size=5, alpha=1e-4, beta=0.75, k=2.0, divide_by_n=False, groups=1):
    """b[i] = a[i] / (k + alpha * sum_{j=max(0,i-n/2)}^{min(N-1,i+n/2)} a[j]^2)^beta, per tower."""
    a = a.double()
    out = torch.empty_like(a)
    per = a.shape[1] // groups
    scale = alpha / size if divide_by_n else alpha
    for g in range(groups):
        for i in range(per):
            lo, hi = max(0, i - size // 2), min(per - 1, i + size // 2)
            s = (a[:, g * per + lo : g * per + hi + 1] ** 2).sum(1)
            out[:, g * per + i] = a[:, g * per + i] / (k + scale * s) ** beta
    return out
