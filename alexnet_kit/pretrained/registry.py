"""The three published AlexNet weight files: where they live, what they are, how they see a photo.

Each :class:`Source` carries what a converted checkpoint needs beyond the
weights: the architecture as config values, the source's own preprocessing
(reproduced exactly), and provenance (URL, published digest, licence,
accuracy as published: none of it was re-measured here, see
docs/pretrained.md). The entries are data, one table in
``alexnet_kit/data/pretrained.json`` (``size`` is null where the publisher
gives no byte count; ``preprocess.why`` says where each source's
preprocessing comes from); the architectures are the configs below.

A mirror (or a test's local server) replaces a URL and digest with
``ALEXNET_KIT_PRETRAINED_<NAME>_URL`` and ``..._DIGEST`` (NAME upper-case,
``-`` as ``_``; a digest is ``sha1:HEX`` or ``sha256:HEX``, a prefix of at
least 8 hex digits allowed).
"""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass

import numpy as np

from ..config import AlexNetConfig
from ..errors import AlexKitError
from ..paths import package_data
from ..preprocess import Preprocess, caffe_mean_to_rgb

# Caffe's LRN: k = 1 and alpha divided by the window size (the paper prints
# k = 2 and alpha on the sum, §3.3); the window runs across all maps of the
# layer, over the group boundary, unlike the paper's per-GPU normalisation.
_CAFFE_LRN = dict(lrn=True, lrn_scope="all", lrn_k=1.0, lrn_alpha=1e-4, lrn_beta=0.75, lrn_size=5, lrn_convention="divided")

CAFFE_CONFIG = AlexNetConfig(input_size=227, conv1_padding=0, ceil_pool=True, init="caffe", **_CAFFE_LRN)
# The zoo feeds 224: without conv1 padding only rounding-up pooling reaches pool5 = 6x6.
ZOO_CONFIG = dataclasses.replace(CAFFE_CONFIG, input_size=224)
# torchvision's IMAGENET1K_V1 is the 2014 single-tower variant: no LRN, other widths.
TORCHVISION_CONFIG = AlexNetConfig(conv_channels=(64, 192, 384, 256, 256), towers=1, lrn=False, init="kaiming")
CONFIGS = {"caffe": CAFFE_CONFIG, "onnx-zoo": ZOO_CONFIG, "torchvision": TORCHVISION_CONFIG}


def caffe_mean_rgb(file: str = "caffe_ilsvrc_2012_mean_bgr.npz") -> np.ndarray:
    """Caffe's ilsvrc_2012_mean.npy (BSD-2, shipped with alexnet-kit), as RGB float32 (3, 256, 256)."""
    with np.load(package_data(file)) as z:
        return caffe_mean_to_rgb(z["mean"])


@dataclass(frozen=True)
class Source:
    name: str
    title: str
    url: str
    filename: str
    digest: str  # "sha1:HEX" / "sha256:HEX" (possibly a prefix)
    size: int | None
    licence: str
    accuracy: dict
    config: AlexNetConfig
    preprocessing: dict  # the table's "preprocess" entry, read by preprocess()
    notes: str = ""
    digest_note: str = ""

    def preprocess(self) -> Preprocess:
        p = self.preprocessing
        if isinstance(p["mean"], str):  # a mean image shipped in alexnet_kit/data (Caffe's, BGR)
            mean = caffe_mean_rgb(p["mean"])
        else:  # per-channel RGB, on the source's own pixel scale (torchvision: 0..1, so times 255)
            mean = np.float32(p.get("scale", 1)) * np.array(p["mean"], np.float32)
        std = tuple(p.get("scale", 1) * s for s in p.get("std", (1, 1, 1)))
        return Preprocess(resize=p["resize"], crop=p["crop"], mean=mean, std=std, resize_mode=p["resize_mode"])

    def with_overrides(self) -> "Source":
        key = "ALEXNET_KIT_PRETRAINED_" + self.name.upper().replace("-", "_")
        url = os.environ.get(key + "_URL") or self.url
        digest = os.environ.get(key + "_DIGEST") or self.digest
        if (url, digest) == (self.url, self.digest):
            return self
        return dataclasses.replace(self, url=url, digest=digest, size=None, digest_note=f"overridden by {key}_URL/_DIGEST")


def _load_sources() -> dict[str, Source]:
    table = json.loads(package_data("pretrained.json").read_text())
    return {name: Source(name=name, config=CONFIGS[e.pop("config")], preprocessing=e.pop("preprocess"), **e)
            for name, e in table.items()}


SOURCES: dict[str, Source] = _load_sources()
NAMES = tuple(SOURCES)  # alexnet_kit.pretrained.NAMES repeats them without loading this table (tested equal)


def source(name: str) -> Source:
    """The named source with any environment override applied."""
    if name not in SOURCES:
        raise AlexKitError(f"unknown pretrained model {name!r} (known: {', '.join(NAMES)})")
    return SOURCES[name].with_overrides()
