"""Where things live when the user does not say."""
from __future__ import annotations

import os
from pathlib import Path


def default_model_path() -> Path:
    """``$ALEXNET_KIT_MODEL``, else ``$XDG_DATA_HOME/alexnet-kit/model.safetensors``."""
    env = os.environ.get("ALEXNET_KIT_MODEL")
    if env:
        return Path(env)
    data_home = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return data_home / "alexnet-kit" / "model.safetensors"


def resolve_model(arg: str | os.PathLike | None) -> Path:
    """The model file a command should use, given what the user passed (or nothing).

    Every command that takes a model goes through here, so a model can be
    named the same way everywhere: a path, a pretrained name (``caffe``,
    ``torchvision``, ``onnx-zoo``: downloaded and converted into the cache on
    first use, the cached checkpoint afterwards; an existing file of that
    name still wins), or nothing for the default.
    Raises a one-line :class:`~alexnet_kit.errors.AlexKitError` when there is
    no such model.
    """
    from .errors import AlexKitError

    if arg is None or str(arg) == "":
        path = default_model_path()
        if not path.exists():
            raise AlexKitError(f"no model at {path}: pass --model PATH, or create one with 'alexnet-kit init' (untrained) "
                               "or 'alexnet-kit train'")
        return path
    path = Path(arg)
    if path.exists():
        return path
    from .pretrained import NAMES

    if str(arg) in NAMES:
        from .pretrained import ensure

        return ensure(str(arg))
    raise AlexKitError(f"{path}: model file not found (pretrained names: {', '.join(NAMES)})")
