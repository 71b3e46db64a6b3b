"""Errors that reach the user as one line: what file, what problem.

Every error a user can cause (a bad photo, a wrong checkpoint, a missing
folder) is an :class:`AlexKitError`; the CLI prints ``str(err)`` and exits
non-zero without a traceback. Anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

import os
from pathlib import Path


class AlexKitError(Exception):
    """Base class: a problem with the user's input, reported in one line."""


class FileProblem(AlexKitError):
    """A problem with one file: ``"<path>: <problem>"``."""

    def __init__(self, path: str | os.PathLike, problem: str):
        self.path = os.fspath(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class ImageError(FileProblem):
    """A photo that cannot be read as an image."""


class CheckpointError(FileProblem):
    """A checkpoint or artifact that is missing, truncated, tampered or foreign."""


def existing_file(path: str | os.PathLike, error: type[FileProblem] = FileProblem, what: str = "a file") -> Path:
    """``path`` as a Path if it is a non-empty file, else ``error(path, why)``."""
    p = Path(path)
    if not p.exists():
        raise error(p, "file not found")
    if p.is_dir():
        raise error(p, f"is a directory, not {what}")
    if p.stat().st_size == 0:
        raise error(p, "empty file (0 bytes)")
    return p


def first_line(e: BaseException) -> str:
    """An exception's message cut to one short line, for a one-line error."""
    s = str(e).strip()
    return s.splitlines()[0][:200] if s else type(e).__name__
