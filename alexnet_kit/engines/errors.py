"""What goes wrong when choosing or opening an engine, one line each.

None of these is a :class:`~alexnet_kit.errors.CheckpointError`: the file is
fine, the wish (engine, precision, device) or this machine is not.
"""
from __future__ import annotations

from ..errors import AlexKitError, FileProblem


class WishError(AlexKitError):
    """An engine or precision that does not exist, is not installed, or cannot run on this machine."""


class SelectionRefused(FileProblem):
    """No engine here can run the model as asked (``"<model>: <why>"``)."""


class GateRefused(SelectionRefused):
    """The precision asked for fails the precision gate on this CPU."""


class NoReferencePhotos(AlexKitError):
    """A precision must be verified on real photos and there are none."""


class PrecisionMismatch(FileProblem):
    """An engine asked to run an artifact in a precision other than the one it holds."""


class EngineMissing(FileProblem):
    """The runtime an engine needs (onnxruntime, openvino) is not installed."""
