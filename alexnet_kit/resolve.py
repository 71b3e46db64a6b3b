"""The model file and index folder a command uses, from what the user named (or :mod:`.settings`' defaults).

Every command that takes a model or an index goes through here, so both are
named the same way everywhere: a model is a file or a pretrained name
(fetched into the cache on first use, :mod:`.pretrained`), an index a folder
or a short name in the user's index folder.
"""
from __future__ import annotations

import os
from pathlib import Path

from .errors import AlexKitError
from .paths import index_root
from .pretrained import NAMES, ensure
from .settings import EXAMPLE_FOLDER, index_choice, index_folder, model_choice


def resolve_model(given: str | os.PathLike | None = None) -> Path:
    """The model file a command should use: a file, or a pretrained name fetched into the cache on first use.

    One-line :class:`AlexKitError` when there is no such model, or it cannot
    be fetched (the line names the address and the ways out)."""
    choice = model_choice(given)
    path = Path(choice.value).expanduser()
    if path.exists():
        return path
    if choice.value in NAMES:
        return ensure(choice.value)
    raise AlexKitError(f"{path}: model file not found ({choice.why}; pretrained names: {', '.join(NAMES)})")


def resolve_index(given: str | os.PathLike | None = None) -> Path:
    """The index folder a command reads: a folder, or the name of one in the user's index folder.

    With nothing given and no index yet: one line saying how to build one."""
    choice = index_choice(given)
    path = index_folder(choice.value)
    if path.exists():
        return path
    if choice.built_in:
        raise AlexKitError(f"no index yet: alexnet-kit index build {EXAMPLE_FOLDER}")
    known = list_indexes()
    names = f" (indexes in {index_root()}: {', '.join(p.name for p in known)})" if known else ""
    raise AlexKitError(f"{choice.value}: no such index folder ({choice.why}){names}")


def build_target(out: str | os.PathLike | None) -> Path:
    """Where ``index build`` writes: ``--out``, else the default index (a name, in the user's index folder)."""
    return Path(out).expanduser() if out is not None else index_folder(index_choice(None).value)


def list_indexes() -> list[Path]:
    """The index folders in the user's index folder, by name."""
    root = index_root()
    from .search.files import store_path  # here, not at the top: the search package loads faiss

    return sorted(p for p in root.iterdir() if p.is_dir() and store_path(p).exists()) if root.is_dir() else []
