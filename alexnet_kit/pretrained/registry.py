"""The three published AlexNet weight files: where they live, what they are, how they see a photo.

Each :class:`Source` carries what a converted checkpoint needs beyond the
weights: the architecture as config values, the source's own preprocessing
(reproduced exactly), and provenance (URL, published digest, licence,
accuracy as published: none of it was re-measured here, see
docs/pretrained.md).

A mirror (or a test's local server) replaces a URL and digest with
``ALEXNET_KIT_PRETRAINED_<NAME>_URL`` and ``..._DIGEST`` (NAME upper-case,
``-`` as ``_``; a digest is ``sha1:HEX`` or ``sha256:HEX``, a prefix of at
least 8 hex digits allowed).
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from importlib import resources

import numpy as np

from ..config import AlexNetConfig
from . import NAMES as _NAMES
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


def caffe_mean_rgb() -> np.ndarray:
    """Caffe's ilsvrc_2012_mean.npy (BSD-2, shipped with alexnet-kit), as RGB float32 (3, 256, 256)."""
    ref = resources.files("alexnet_kit") / "data" / "caffe_ilsvrc_2012_mean_bgr.npz"
    with resources.as_file(ref) as p, np.load(p) as z:
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
    notes: str = ""
    digest_note: str = ""
    extra: dict = field(default_factory=dict)

    def preprocess(self) -> Preprocess:
        if self.name == "caffe":
            # Caffe's training images were warped to 256x256 (convert_imageset),
            # then the mean image subtracted and a 227 crop taken.
            return Preprocess(resize=256, crop=227, mean=caffe_mean_rgb(), resize_mode="warp")
        if self.name == "torchvision":
            # transforms: resize 256 (short side), centre crop 224, to 0..1, normalise:
            # the same as 0..255 with mean and std times 255.
            return Preprocess(resize=256, crop=224, mean=np.float32(255) * np.array((0.485, 0.456, 0.406), np.float32),
                              std=tuple(255 * s for s in (0.229, 0.224, 0.225)), resize_mode="crop")
        # The zoo's listed accuracy: resize straight to 224x224, subtract the RGB mean.
        return Preprocess(resize=224, crop=224, mean=np.array((123.68, 116.779, 103.939), np.float32), resize_mode="warp")

    def with_overrides(self) -> "Source":
        key = "ALEXNET_KIT_PRETRAINED_" + self.name.upper().replace("-", "_")
        url = os.environ.get(key + "_URL") or self.url
        digest = os.environ.get(key + "_DIGEST") or self.digest
        if (url, digest) == (self.url, self.digest):
            return self
        return dataclasses.replace(self, url=url, digest=digest, size=None, digest_note=f"overridden by {key}_URL/_DIGEST")


SOURCES: dict[str, Source] = {
    "caffe": Source(
        name="caffe",
        title="BVLC bvlc_alexnet (Caffe model zoo), the paper's grouped network",
        url="http://dl.caffe.berkeleyvision.org/bvlc_alexnet.caffemodel",
        filename="bvlc_alexnet.caffemodel",
        digest="sha1:9116a64c0fbe4459d18f4bb6b56d647b63920377",
        size=None,  # about 233 MB; the exact byte count is not published
        licence="released for unrestricted use (BVLC model zoo readme); ImageNet's terms of use apply to the training data",
        accuracy={"top1": 57.1, "top5": 80.2, "crops": 1, "split": "ILSVRC-2012 val", "by": "BVLC (Caffe models/bvlc_alexnet/readme.md)"},
        config=CAFFE_CONFIG,
        notes="227 crops of photos warped to 256x256, Caffe's mean image, LRN across all maps with k=1",
        digest_note="SHA1 from the model's readme",
    ),
    "torchvision": Source(
        name="torchvision",
        title="torchvision AlexNet_Weights.IMAGENET1K_V1 (the 2014 single-tower variant)",
        url="https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
        filename="alexnet-owt-7be5be79.pth",
        digest="sha256:7be5be791159472b1fbf3c69796f7cb30dca7ad8466c2df70058c37116cdee02",
        size=244_408_911,
        licence="code BSD-3; the weights may carry terms derived from ImageNet (torchvision documentation)",
        accuracy={"top1": 56.522, "top5": 79.066, "crops": 1, "split": "ImageNet-1K val", "by": "torchvision model documentation"},
        config=TORCHVISION_CONFIG,
        notes="64-192-384-256-256 kernels, one tower, no LRN; 224 crops, 0..1 scale, mean/std",
        digest_note="the name's 7be5be79 is the SHA256 prefix (torch.hub's convention); the full digest comes from third-party pins",
    ),
    "onnx-zoo": Source(
        name="onnx-zoo",
        title="ONNX model zoo bvlcalexnet-12 (Caffe's weights via Caffe2)",
        url="https://github.com/onnx/models/raw/main/validated/vision/classification/alexnet/model/bvlcalexnet-12.onnx",
        filename="bvlcalexnet-12.onnx",
        digest="sha256:6b0da951",
        size=243_863_787,
        licence="BSD-3 (onnx/models); Caffe's weights as above",
        accuracy={"top1": 54.80, "top5": 78.23, "crops": 1, "split": "ILSVRC-2012 val", "by": "onnx/models README (Intel Neural Compressor preprocessing)"},
        config=ZOO_CONFIG,
        notes="224 input (photos warped to 224x224), RGB mean subtracted; pooling rounds up",
        digest_note="only the SHA256 prefix is published in the zoo's manifest listing",
    ),
}

NAMES = tuple(SOURCES)
assert NAMES == _NAMES, "alexnet_kit.pretrained.NAMES lists the sources for the CLI"


def source(name: str) -> Source:
    """The named source with any environment override applied."""
    from ..errors import AlexKitError

    if name not in SOURCES:
        raise AlexKitError(f"unknown pretrained model {name!r} (known: {', '.join(NAMES)})")
    return SOURCES[name].with_overrides()
