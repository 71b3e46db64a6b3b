"""What an index's vectors mean, and the one check that an extractor may add to or query it.

An index records the model's fingerprint and path, the feature settings, the
dimension and the :class:`~alexnet_kit.engines.precision.Precision` its
vectors were computed in (``"precision": "fp32" | "bf16" | "int8"``).

Old index folders: before the precision was recorded as such, a bf16 index
held ``"bf16": true`` and an int8 one was known only by its model
fingerprint (``<weights>-int8-<mode>``); both still open, read by
:meth:`IndexSettings.from_store`.

Precision rules: bf16 features differ from fp32 ones in the third decimal,
so adding to an index must use its own precision; a *query* may run in fp32
where the index's bf16 cannot run natively (the gate holds bf16's fc7 cosine
to fp32 at >= 0.999, so the ranking is the same to that margin). int8
features are another model's: the fingerprint already tells them apart.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..engines import cpu
from ..engines.precision import Precision, of_fingerprint
from ..features import FeatureExtractor, FeatureSettings
from . import files
from .errors import IndexMismatch
from .store import Store


def bf16_here(device: str = "cpu") -> bool:
    """This machine computes bf16 natively on ``device`` (only the CPU path offers bf16)."""
    return str(device).split(":")[0] == "cpu" and cpu.native_bf16()


@dataclass(frozen=True)
class IndexSettings:
    fingerprint: str
    model_path: str
    model_trained: bool
    features: FeatureSettings
    dim: int
    precision: Precision

    @classmethod
    def of(cls, extractor: FeatureExtractor, model: str | os.PathLike) -> "IndexSettings":
        """The settings of an index built by ``extractor`` from the file ``model``."""
        return cls(extractor.fingerprint, str(Path(model).resolve()), extractor.meta.trained, extractor.settings,
                   extractor.dim, Precision(extractor.precision))

    def to_store(self) -> dict:
        return {"model_fingerprint": self.fingerprint, "model_path": self.model_path,
                "model_trained": self.model_trained, "features": self.features.to_json(), "dim": self.dim,
                "precision": str(self.precision)}

    @classmethod
    def from_store(cls, store: Store) -> "IndexSettings":
        fingerprint = store.get("model_fingerprint")
        recorded = store.get("precision")
        if recorded is not None:
            precision = Precision.parse(recorded)
        elif store.get("bf16", False):  # an index from before the precision was recorded as such
            precision = Precision.BF16
        else:
            precision = of_fingerprint(fingerprint)
        return cls(fingerprint, store.get("model_path"), bool(store.get("model_trained")),
                   FeatureSettings.from_json(store.get("features")), int(store.get("dim")), precision)

    @classmethod
    def read(cls, root: str | os.PathLike) -> "IndexSettings | None":
        """The settings of the index at ``root``; None when there is none yet."""
        spath = files.store_path(Path(root))
        if not spath.exists():
            return None
        store = Store.open(spath, verify=False)
        try:
            return cls.from_store(store)
        finally:
            store.close()

    def extraction_precision(self, root, device: str = "cpu", *, query: bool = False) -> Precision:
        """The precision to compute this index's features in here (see the module docstring)."""
        if self.precision is not Precision.BF16 or bf16_here(device):
            return self.precision
        if query:
            return Precision.FP32
        where = f"on {device}" if not str(device).startswith("cpu") else "on this CPU (no amx_bf16 or avx512_bf16)"
        raise IndexMismatch(f"{root}: its features were computed in bf16, which cannot run natively {where}: adding "
                            "fp32 vectors would mix precisions; add to it on a CPU with native bf16, or rebuild it with --force")

    def mismatch(self, extractor: FeatureExtractor, model, root, *, query: bool = False) -> str | None:
        """Why ``extractor`` may not add to (or, with ``query``, query) this index; None when it may."""
        if extractor.fingerprint != self.fingerprint:
            return (f"{root}: built with model {self.fingerprint[:12]} ({self.model_path}), but {model} is model "
                    f"{extractor.fingerprint[:12]}: its features are not comparable; build a new index for this model "
                    "or use the model the index was built with")
        if extractor.settings != self.features:
            return (f"{root}: built with features '{self.features.describe()}', asked for "
                    f"'{extractor.settings.describe()}': use the index's settings (leave the option out) or build a new index")
        asked = Precision(extractor.precision)
        if asked is not self.precision and not (query and self.precision is Precision.BF16 and asked is Precision.FP32):
            return (f"{root}: its features were computed in {self.precision}, this engine computes {asked}: mixing them "
                    f"would make stored and new vectors disagree; use --precision {self.precision} (or leave it out) "
                    "or build a new index")
        return None

    def compatible(self, extractor: FeatureExtractor, *, query: bool = False) -> bool:
        return self.mismatch(extractor, "", "", query=query) is None

    def check(self, extractor: FeatureExtractor, model, root, *, query: bool = False) -> None:
        """Refuse, in one line, an extractor whose vectors would not be comparable with the index's."""
        why = self.mismatch(extractor, model, root, query=query)
        if why:
            raise IndexMismatch(why)
