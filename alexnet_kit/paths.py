"""Where things live when the user does not say.

Four places, found here and nowhere else:

* **package data** (``alexnet_kit/data/...``: the class list, Caffe's mean
  image, a few real photos), through :mod:`importlib.resources`, so it is
  there however alexnet-kit was installed;
* the **source checkout** the package runs from (an editable install or
  ``PYTHONPATH``), for what ships only with the repository: the example
  photos and the quickstart data under ``examples/``; ``None`` from a wheel;
* the optional **shared data** (real data sets too large for the
  repository): ``$ALEXNET_KIT_SHARED_DATA``, else ``../shared/data`` beside
  the checkout;
* the **user's folders** (XDG): the cache (downloads, measurements), the
  data folder (default indexes) and the config file (:mod:`.settings`).

A feature that needs a file from the checkout or the shared data where it is absent fails
with one line naming the file and the flag or variable that supplies it.
"""
from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

from .errors import AlexKitError
from .imagefiles import is_image_path

SHARED_DATA_ENV = "ALEXNET_KIT_SHARED_DATA"


def package_data(*parts: str) -> Path:
    """A file or folder shipped inside the package, e.g. ``package_data("photos")``."""
    ref = resources.files("alexnet_kit").joinpath("data", *parts)
    if not isinstance(ref, Path):  # a zipped install: our files must be real files (they are, from a wheel)
        raise AlexKitError(f"alexnet_kit/data/{'/'.join(parts)}: alexnet-kit is installed inside an archive; "
                           "install it as files (pip install)")
    return ref


def checkout() -> Path | None:
    """The repository the package runs from, or None when it runs from an installed wheel."""
    root = Path(__file__).resolve().parents[1]
    return root if (root / "pyproject.toml").is_file() and (root / "examples").is_dir() else None


def shared_data_root() -> Path | None:
    """``$ALEXNET_KIT_SHARED_DATA``, else ``../shared/data`` beside the checkout (None outside one)."""
    env = os.environ.get(SHARED_DATA_ENV)
    if env:
        return Path(env)
    root = checkout()
    return root.parent / "shared" / "data" if root else None


def shared_data(*parts: str) -> Path:
    """A path in the shared data, which must exist; else a one-line AlexKitError saying how to supply it."""
    base = shared_data_root()
    if base is None:
        raise AlexKitError(f"{'/'.join(parts)}: this needs the shared data folder (../shared/data beside a source "
                           f"checkout); set {SHARED_DATA_ENV}=DIR to where it is")
    path = base.joinpath(*parts)
    if not path.exists():
        raise AlexKitError(f"{path}: not found (the shared data folder; set {SHARED_DATA_ENV}=DIR to another "
                           "copy, see its README.md)")
    return path


def optional_shared(*parts: str) -> Path | None:
    """A path in the shared data when it exists, else None (for extras such as more photos)."""
    base = shared_data_root()
    path = base.joinpath(*parts) if base else None
    return path if path is not None and path.exists() else None


def example_photos() -> list[Path]:
    """Real photos for defaults (export verification, the serving gate, the demo's examples): the
    checkout's ``examples/photos``, else the scaled copies shipped in the package."""
    root = checkout()
    folder = root / "examples" / "photos" if root and (root / "examples" / "photos").is_dir() else package_data("photos")
    return sorted(p for p in folder.iterdir() if p.is_file() and is_image_path(p))


def repo_path(path: str | os.PathLike, flag: str) -> Path:
    """``path`` from the current folder, else from the checkout (e.g. a recipe's ``examples/quickstart-data``).

    Outside a checkout a relative path that is not here fails in one line naming ``flag``, the option
    that supplies the file instead."""
    p = Path(path)
    if p.exists() or p.is_absolute():
        return p
    root = checkout()
    if root is not None and (root / p).exists():
        return root / p
    where = "" if root is not None else " (it ships with the source checkout, not with the installed package)"
    raise AlexKitError(f"{p}: not found{where}; pass {flag} DIR")


def cache_root() -> Path:
    """``$XDG_CACHE_HOME/alexnet-kit`` (``~/.cache/alexnet-kit`` when unset): downloads, measurements."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "alexnet-kit"


def data_root() -> Path:
    """``$XDG_DATA_HOME/alexnet-kit`` (``~/.local/share/alexnet-kit`` when unset): the user's own indexes."""
    return Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share") / "alexnet-kit"


def index_root() -> Path:
    """Where ``index build`` puts an index given no ``--out``, and where ``--index NAME`` looks."""
    return data_root() / "indexes"


def config_file() -> Path:
    """``$XDG_CONFIG_HOME/alexnet-kit/config.toml`` (``~/.config/...`` when unset): the user's defaults."""
    return Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "alexnet-kit" / "config.toml"
