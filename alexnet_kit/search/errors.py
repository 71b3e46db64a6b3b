"""Errors of the similarity index, each one line for the user."""
from __future__ import annotations

from ..errors import AlexKitError, FileProblem


class IndexProblem(FileProblem):
    """An index folder, metadata store or FAISS file that is missing, corrupt or stale."""


class IndexMismatch(AlexKitError):
    """A model or feature setting other than the one the index was built with."""
