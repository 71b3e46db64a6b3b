"""alexnet-kit: the network of Krizhevsky, Sutskever & Hinton (2012), and its runtime.

The runtime library (this package) holds the model, its file formats,
preprocessing, the engines that run model files, classification and
similarity search. The stages ``alexnet_kit.train``, ``alexnet_kit.export``
and ``alexnet_kit.apps`` build on it.

Its layers, each importing only the ones above it (no cycle, imports inside
functions counted; ``tests`` walk the graph):

1. foundations, no torch: ``errors``, ``fsutil``, ``imagefiles`` (which
   names are photos), ``paths`` (where files live), ``settings`` (the
   default model and index, and why), ``config`` (the network's settings),
   ``interrupt`` (how long jobs stop on a signal);
2. the network and its files: ``named_layers`` (every activation's name,
   shape and receptive field), ``lrn``, ``towers``, ``model``, ``images``,
   ``preprocess``, ``meta``, ``checkpoint``, ``metrics``, ``batching``;
3. published weights: ``pretrained/`` (readers, registry, downloader), and
   ``resolve`` (a model or index name to a file, fetching on first use);
4. ``engines/``: what runs a model file here, :func:`~alexnet_kit.engines.choose`
   to a :class:`~alexnet_kit.engines.Selection`, then opened;
5. what the engines serve: ``classify``, ``features``, ``features_file``,
   ``search/``, and ``explain/`` (heat maps, and what units respond to over
   an index's photos);
6. ``cli/``: one module per subcommand. It is the one place that reaches the
   stages, lazily, inside ``train``, ``prepare``, ``evaluate``, ``export``,
   ``reproduce`` and ``demo``; nothing else in the runtime imports them.

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
    "choose": "engines", "Selection": "engines", "Precision": "engines",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
