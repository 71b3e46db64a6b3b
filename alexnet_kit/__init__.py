"""alexnet-kit: the network of Krizhevsky, Sutskever & Hinton (2012), and its runtime.

The runtime library (this package) holds the model, its checkpoint format,
preprocessing, classification and the engines that run model files. The
stages ``alexnet_kit.train``, ``alexnet_kit.export`` and ``alexnet_kit.apps``
build on it; it never imports them.

Names below are imported on first use, so ``alexnet-kit --help`` does not
pay for importing torch.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "AlexNet": "model", "AlexNetConfig": "config",
    "TowerAlexNet": "towers",
    "Classifier": "classify", "Label": "classify", "Result": "classify",
    "ModelMeta": "meta",
    "load_checkpoint": "checkpoint", "load_model": "checkpoint", "save_checkpoint": "checkpoint",
    "AlexKitError": "errors", "CheckpointError": "errors", "ImageError": "errors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
