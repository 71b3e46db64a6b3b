"""What goes wrong when choosing or opening an engine, one line each.

None of these is a :class:`~alexnet_kit.errors.CheckpointError`: the file is
fine, the wish (engine, precision, device) or this machine is not.
"""
from __future__ import annotations

from ..errors import AlexKitError, FileProblem
from ..named_layers import parse_layers


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


class LayerUnavailable(FileProblem):
    """A named layer the model file cannot compute: an exported artifact has fc7 and fc8 (its two outputs) only."""


def require_layers(path, names, have: tuple[str, ...]) -> list[str]:
    """``names`` (``"conv3,fc7"`` or a list) parsed, one line for an unknown one; one line naming ``path``,
    the layers that need a checkpoint and the ones it has when ``have`` lacks any."""
    names = parse_layers(names)
    missing = [n for n in names if n not in have]
    if missing:
        raise LayerUnavailable(path, f"{', '.join(missing)} features need a checkpoint (.safetensors); this model file "
                                     f"computes {', '.join(have)} only")
    return names
