"""Errors that reach the user as one line: what file, what problem.

Every error a user can cause (a bad photo, a wrong checkpoint, a missing
folder) is an :class:`AlexKitError`; the CLI prints ``str(err)`` and exits
non-zero without a traceback. Anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

import os


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
