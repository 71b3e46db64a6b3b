"""What a model file must carry to be used on its own.

:class:`ModelMeta` travels inside every checkpoint and exported artifact as
one JSON document: the architecture, the class names, the input size and
normalisation (mean image included), and where the weights came from. No
other file is needed to classify with a model.
"""
from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .config import AlexNetConfig
from .errors import CheckpointError
from .paths import package_data
from .preprocess import Preprocess

FORMAT = "alexnet-kit"
VERSION = 1  # bump on an incompatible change; readers refuse newer versions


@dataclass
class ModelMeta:
    config: AlexNetConfig
    classes: list[str]
    wnids: list[str] | None = None
    preprocess: Preprocess = field(default_factory=Preprocess)
    trained: bool = False
    provenance: dict = field(default_factory=dict)

    def __post_init__(self):
        if len(self.classes) != self.config.num_classes:
            raise ValueError(f"{len(self.classes)} class names for a {self.config.num_classes}-class model")
        if self.wnids is not None and len(self.wnids) != len(self.classes):
            raise ValueError("wnids and classes differ in length")
        if self.preprocess.crop != self.config.input_size:
            raise ValueError(f"crop {self.preprocess.crop} != model input size {self.config.input_size}")

    def to_dict(self) -> dict:
        mean = np.ascontiguousarray(self.preprocess.mean, dtype="<f4")
        return {
            "format": FORMAT,
            "version": VERSION,
            "config": self.config.to_dict(),
            "classes": list(self.classes),
            "wnids": list(self.wnids) if self.wnids is not None else None,
            "preprocess": {
                "resize": int(self.preprocess.resize),
                "resize_mode": self.preprocess.resize_mode,
                "crop": self.preprocess.crop,
                "std": list(self.preprocess.std),
                "mean_shape": list(mean.shape),
                "mean_f32le_b64": base64.b64encode(mean.tobytes()).decode("ascii"),
            },
            "trained": self.trained,
            "provenance": self.provenance,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelMeta":
        """Parse; raises ValueError with a readable reason on anything foreign."""
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise ValueError("no alexnet-kit metadata")
        version = d.get("version")
        if not isinstance(version, int):
            raise ValueError("metadata has no format version")
        if version > VERSION:
            raise ValueError(f"written by a newer alexnet-kit (format version {version}, this one reads up to {VERSION}); upgrade alexnet-kit")
        try:
            p = d["preprocess"]
            mean = np.frombuffer(base64.b64decode(p["mean_f32le_b64"]), dtype="<f4").reshape(p["mean_shape"])
            # resize_mode came with pretrained imports; older files all cropped (§2)
            pre = Preprocess(resize=int(p["resize"]), crop=int(p["crop"]), mean=mean.astype(np.float32), std=tuple(p["std"]),
                             resize_mode=p.get("resize_mode", "crop"))
            return cls(
                config=AlexNetConfig.from_dict(d["config"]),
                classes=list(d["classes"]),
                wnids=d.get("wnids"),
                preprocess=pre,
                trained=bool(d.get("trained", False)),
                provenance=dict(d.get("provenance") or {}),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"malformed metadata ({type(e).__name__}: {e})") from None

    @classmethod
    def from_json(cls, s: str | bytes) -> "ModelMeta":
        try:
            d = json.loads(s)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"metadata is not valid JSON ({e})") from None
        return cls.from_dict(d)

    @classmethod
    def from_signed_json(cls, path, meta_json, sha256) -> "ModelMeta":
        """The metadata a checkpoint or an artifact stores beside its SHA-256; a one-line
        :class:`~alexnet_kit.errors.CheckpointError` naming ``path`` when they disagree or it is invalid."""
        if not isinstance(meta_json, str) or hashlib.sha256(meta_json.encode()).hexdigest() != sha256:
            raise CheckpointError(path, "metadata digest mismatch: the file was modified after it was written")
        try:
            return cls.from_json(meta_json)
        except ValueError as e:
            raise CheckpointError(path, str(e)) from None


# -- class names ---------------------------------------------------------

def read_class_file(path: str | Path) -> tuple[list[str] | None, list[str]]:
    """``wnid<TAB>names`` lines (ImageNet's classes.tsv) or one name per line."""
    lines = [l.rstrip("\n") for l in Path(path).read_text(encoding="utf-8").splitlines() if l.strip()]
    if lines and all("\t" in l for l in lines):
        pairs = [l.split("\t", 1) for l in lines]
        return [w for w, _ in pairs], [n for _, n in pairs]
    return None, lines


def imagenet_classes() -> tuple[list[str], list[str]]:
    """The 1000 ILSVRC-2012 classes in the standard order: (wnids, names)."""
    wnids, names = read_class_file(package_data("imagenet_classes.tsv"))
    assert wnids is not None and len(names) == 1000
    return wnids, names
