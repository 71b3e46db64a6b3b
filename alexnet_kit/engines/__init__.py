"""Engines run a model file: a checkpoint, or (with the export stage) an artifact.

Every engine takes the network's input, a float32 (N, 3, 224, 224) batch
already normalised and cropped, and returns logits and/or the 4096-d fc7
features; :meth:`Engine.activations` returns named layers
(:mod:`alexnet_kit.named_layers`): fc7 and fc8 from every file, every layer
from a checkpoint. The runtime above them (classification, similarity
search, the demo) never cares which file format it runs.

Two steps, each in one place: :func:`choose` decides what runs a model here
(a :class:`Selection`: engine, :class:`Precision`, file, measurement,
reason), and :meth:`Selection.open` / :func:`open_engine` loads it.
``load_engine(path)`` is the file's own engine by suffix (no choice).

The modules, by seam: :mod:`.precision` (the Precision type and the agreement
thresholds), :mod:`.candidates` (what can run a file here), :mod:`.gate` (the
measurement on real photos), :mod:`.measurements` (the JSON sidecar),
:mod:`.timing`, :mod:`.messages` (every sentence), :mod:`.errors`,
:mod:`.select` (the decision), :mod:`.selection` (the value, and opening it),
:mod:`.loaders` (engine by suffix) and one module per engine. The names below
load on first use, so ``alexnet_kit.engines.precision`` stays torch-free.
"""
from __future__ import annotations

import importlib

_NAMES = {
    "Engine": ".base", "run_batches": ".base", "LOADERS": ".loaders", "load_engine": ".loaders",
    "Precision": ".precision", "Wish": ".select", "choose": ".select", "Selection": ".selection",
    "open_engine": ".selection", "feature_layers_of": ".loaders", "ARTIFACT_LAYERS": ".base",
}


def __getattr__(name: str):
    if name not in _NAMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_NAMES[name], __name__), name)  # defers torch until a name is used


__all__ = sorted(_NAMES)
