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
