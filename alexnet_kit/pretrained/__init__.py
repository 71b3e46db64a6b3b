"""Published AlexNet weights as ordinary alexnet-kit checkpoints.

    >>> from alexnet_kit.pretrained import convert, ensure
    >>> convert("caffe", "bvlc_alexnet.caffemodel", "caffe.safetensors")   # a file you have
    >>> ensure("caffe")          # download (once) into the cache, convert (once), return the checkpoint

Three sources (see :mod:`.registry`): ``caffe`` (BVLC's bvlc_alexnet, the
paper's grouped network), ``torchvision`` (IMAGENET1K_V1, the 2014
single-tower variant) and ``onnx-zoo`` (bvlcalexnet-12, Caffe's weights via
ONNX). Each reader checks every layer's shape and refuses another network
in one line; nothing is written unless the whole conversion succeeded.
"""
from __future__ import annotations

import contextlib
import os
import sys
import time
from pathlib import Path

try:
    import fcntl
except ImportError:  # not POSIX: the cache works without its lock
    fcntl = None

from .. import __version__
from ..errors import AlexKitError, FileProblem, existing_file
from ..paths import cache_root
from ..settings import OFFLINE_ENV, offline
from .download import DownloadError, check_file_digest, download

# The names without importing the registry (which builds configs with torch):
# the CLI lists them at start-up and must stay light.
NAMES = ("caffe", "torchvision", "onnx-zoo")

__all__ = ["NAMES", "convert", "ensure", "fetch", "cache_dir", "cached_checkpoint", "read_weights"]


def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/alexnet-kit/pretrained`` (``~/.cache/...`` when unset)."""
    return cache_root() / "pretrained"


def cached_checkpoint(name: str) -> Path:
    """Where ``--model NAME`` looks for (and puts) the converted checkpoint."""
    return cache_dir() / f"{name}.safetensors"


def read_weights(name: str, path: str | os.PathLike) -> dict:
    """The grouped model's state dict (RGB conv1) from a source's own file format."""
    path = existing_file(path, FileProblem, "a weights file")
    # each reader here, not at the top: they load torch (and onnx), which listing NAMES must not
    if name == "caffe":
        from .caffe import read_caffemodel

        return read_caffemodel(path)
    if name == "torchvision":
        from .torchvision import read_state_dict

        return read_state_dict(path)
    if name == "onnx-zoo":
        from .onnx_zoo import read_onnx

        return read_onnx(path)
    raise AlexKitError(f"unknown pretrained model {name!r} (known: {', '.join(NAMES)})")


def convert(name: str, file: str | os.PathLike, out: str | os.PathLike, digest_check: bool = True,
            src=None) -> Path:
    """Convert a source's file into a checkpoint at ``out`` (written atomically, or not at all)."""
    import torch  # here and below, not at the top: the model, checkpoint and registry load torch

    from ..checkpoint import save_checkpoint
    from ..meta import ModelMeta, imagenet_classes
    from ..model import AlexNet
    from .registry import source

    src = src or source(name)
    file = existing_file(file, FileProblem, "a weights file")
    out = Path(out)
    if out.suffix.lower() != ".safetensors":  # the runtime picks the engine by suffix
        raise FileProblem(out, "a checkpoint must end in .safetensors")
    if out.is_dir():
        raise FileProblem(out, "is a directory; give the checkpoint's file name")
    matches, actual = check_file_digest(file, src.digest)
    if not matches and digest_check:
        raise FileProblem(file, f"{actual.replace(':', ' ')} differs from the published {src.digest} of {src.filename}: "
                                "not the published file (pass --no-digest-check to convert it anyway)")
    state = read_weights(name, file)
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in AlexNet(src.config).state_dict().items()}
    for k, shape in expected.items():  # the readers check shapes too; this guards the config
        if tuple(state[k].shape) != shape:
            raise FileProblem(file, f"layer {k.split('.')[0]}: shape {tuple(state[k].shape)} does not fit the {name} architecture {shape}")
    wnids, classes = imagenet_classes()
    provenance = {
        "source": name,
        "title": src.title,
        "url": src.url,
        "file": Path(file).name,
        "file_digest": actual,
        "published_digest": src.digest,
        "digest_checked": digest_check,
        "digest_matches": matches,
        "licence": src.licence,
        "published_accuracy": src.accuracy,
        "accuracy_note": "as published by the source, not re-measured by alexnet-kit",
        "notes": src.notes,
        "converted_by": f"alexnet-kit {__version__}",
        "converted_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if src.digest_note:
        provenance["digest_note"] = src.digest_note
    if not matches:
        provenance["warning"] = "the file's digest differs from the published one: converted with --no-digest-check"
    meta = ModelMeta(src.config, classes, wnids, preprocess=src.preprocess(), trained=True, provenance=provenance)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(out, state, meta)
    return out


def ensure(name: str, progress: bool = True) -> Path:
    """The cached checkpoint for ``name``: downloaded and converted on first use, reused afterwards.

    Before a download one stderr line (with the progress bar, unless ``progress``
    is off) says what is fetched, from where, how big it is and where it goes.
    Offline (:func:`alexnet_kit.settings.offline`)
    or when the download fails, one :class:`AlexKitError` line names the
    address, the failure and the ways out; nothing is left in the cache but a
    resumable ``.part`` file of an interrupted transfer."""
    from .registry import source  # here, not at the top: the registry loads torch

    ckpt = cached_checkpoint(name)
    if ckpt.exists():
        return ckpt
    src = source(name)
    _check_online(src)
    with _cache_lock(name):  # two commands started together must not write the same .part file
        if ckpt.exists():  # the other one finished while we waited
            return ckpt
        return convert(name, _download(src, progress, then=ckpt), ckpt, src=src)


def fetch(name: str, progress: bool = True) -> Path:
    """The source's published file in the cache, downloaded (digest checked) when missing."""
    from .registry import source  # here, not at the top: the registry loads torch

    src = source(name)
    _check_online(src)
    with _cache_lock(name):
        return _download(src, progress)


def ways_out(name: str) -> str:
    return (f"with the file at hand: alexnet-kit pretrained {name} --file FILE; "
            "or name another model: --model PATH (a checkpoint or exported artifact)")


def _check_online(src) -> None:
    """Refuse, before any file is made, a download that offline mode forbids (a file in the cache needs none)."""
    if offline() and not (cache_dir() / src.filename).exists():
        raise AlexKitError(f"{src.name} weights are not in {cache_dir()} and offline mode ({OFFLINE_ENV}=1 or "
                           f"offline = true in the config file) forbids fetching {src.url}; {ways_out(src.name)}")


def _download(src, progress: bool, then: Path | None = None) -> Path:
    # the caller holds _cache_lock: flock is per open file, so taking it again here would wait forever
    raw = cache_dir() / src.filename
    if not raw.exists():
        size = f"{src.size / 1e6:,.0f} MB" if src.size else "about 244 MB"
        after = f", then converted to {then}" if then else ""
        if progress:
            print(f"alexnet-kit: downloading the {src.name} weights, {src.title}, {size}, from {src.url} to {raw} "
                  f"(once{after})", file=sys.stderr, flush=True)
        try:
            download(src.url, raw, src.digest, progress=progress)
        except DownloadError as e:
            raise DownloadError(f"{e}; {ways_out(src.name)}") from None
    return raw


@contextlib.contextmanager
def _cache_lock(name: str):
    cache_dir().mkdir(parents=True, exist_ok=True)
    if fcntl is None:
        yield
        return
    with open(cache_dir() / f".{name}.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
