"""alexnet-kit: the network of Krizhevsky, Sutskever & Hinton (2012), and its runtime.

The runtime library (this package) holds the model, its checkpoint format,
preprocessing, classification and the engines that run model files. The
stages ``alexnet_kit.train``, ``alexnet_kit.export`` and ``alexnet_kit.apps``
build on it; it never imports them.
"""
from __future__ import annotations

__version__ = "0.1.0"

from .checkpoint import load_checkpoint, load_model, save_checkpoint  # noqa: E402
from .classify import Classifier, Label, Result  # noqa: E402
from .errors import AlexKitError, CheckpointError, ImageError  # noqa: E402
from .meta import ModelMeta  # noqa: E402
from .model import AlexNet, AlexNetConfig  # noqa: E402
from .towers import TowerAlexNet  # noqa: E402

__all__ = [
    "AlexKitError", "AlexNet", "AlexNetConfig", "CheckpointError", "Classifier", "ImageError",
    "Label", "ModelMeta", "Result", "TowerAlexNet", "load_checkpoint", "load_model", "save_checkpoint",
]
