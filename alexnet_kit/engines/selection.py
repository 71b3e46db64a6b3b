"""What runs a model: a :class:`Selection`, decided once (:func:`~alexnet_kit.engines.select.choose`), then opened.

A Selection is a value you can print, compare and pass around: the engine,
the precision, the file that runs (the int8 export when int8 was chosen),
the stored measurement it rests on, and the reason in words. Opening it is a
separate step: :meth:`Selection.open` (or :func:`open_engine`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Mapping

from .base import Engine
from .loaders import load_engine, open_path
from .precision import Precision


@dataclass(frozen=True)
class Selection:
    #: the model file asked for
    model: Path
    #: onnxruntime, openvino or torch
    engine: str
    precision: Precision
    #: the file that runs: ``model``, or the int8 export beside it when int8 was chosen
    path: Path
    #: why this engine and precision, in words (what the CLI prints after "engine: ")
    reason: str
    #: the stored measurement it rests on (None for the reference chosen without one, or off the CPU)
    measurement: Mapping | None = field(default=None, compare=False)
    device: str = "cpu"
    #: crops per forward call it was chosen for (sets OpenVINO's hint)
    batch: int = 80
    threads: int | None = None
    #: off the CPU the file runs on its own engine, as exported
    own_engine: bool = False

    def __post_init__(self):
        if self.measurement is not None and not isinstance(self.measurement, MappingProxyType):
            object.__setattr__(self, "measurement", MappingProxyType(dict(self.measurement)))

    @property
    def name(self) -> str:
        return f"{self.engine} {self.precision}"

    def open(self) -> Engine:
        return open_engine(self)

    def __str__(self) -> str:
        return self.reason


def open_engine(selection: Selection) -> Engine:
    """The engine ``selection`` describes, loaded; ``engine.selection`` is the selection it came from."""
    s = selection
    if s.own_engine:
        engine = load_engine(s.path, device=s.device)
    else:
        engine = open_path(s.engine, s.precision, s.path, s.device, s.threads, s.batch)
    engine.selection = s
    return engine
