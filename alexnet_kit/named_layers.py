"""The network's named layers: their order, their shapes and their receptive fields (no torch).

Every activation a user can ask for by name, in the order the image passes
through them (§3, Figure 2):

    conv1_pre conv1 norm1 pool1   conv2_pre conv2 norm2 pool2   conv3_pre conv3
    conv4_pre conv4   conv5_pre conv5 pool5   fc6_pre fc6 fc7_pre fc7 fc8

``convN`` and ``fcN`` are after their ReLU (§3.1), as Caffe's in-place ReLU
leaves its blobs and as the fc7 features of §6.1 are; ``convN_pre`` and
``fcN_pre`` before it; ``normN`` after the response normalisation of §3.3
(the ReLU's output again where a network has none, e.g. torchvision's);
``poolN`` after the overlapping max-pooling of §3.4; ``fc8`` the logits,
before the softmax. Dropout (§4.2) is off at test time, so it has no name.

:func:`receptive_field` says which input pixels a unit of a map sees, as
the top-9 patches of Zeiler & Fergus (2013, Figure 2) are cut out.
"""
from __future__ import annotations

from dataclasses import dataclass

from .config import AlexNetConfig
from .errors import AlexKitError

LAYER_NAMES = (
    "conv1_pre", "conv1", "norm1", "pool1",
    "conv2_pre", "conv2", "norm2", "pool2",
    "conv3_pre", "conv3",
    "conv4_pre", "conv4",
    "conv5_pre", "conv5", "pool5",
    "fc6_pre", "fc6", "fc7_pre", "fc7", "fc8",
)
#: the layers with a spatial map (C, H, W); the rest are vectors
MAP_LAYERS = LAYER_NAMES[: LAYER_NAMES.index("pool5") + 1]
SPATIAL = ("flatten", "max", "mean")


def parse_layers(text: str | list[str] | tuple[str, ...], allowed: tuple[str, ...] = LAYER_NAMES) -> list[str]:
    """``"conv3,fc7"`` (or a list) -> ["conv3", "fc7"]; one line naming the layers there are for an unknown one."""
    names = [n.strip() for n in (text.split(",") if isinstance(text, str) else text) if n.strip()]
    if not names:
        raise AlexKitError(f"no layer named (one or more of: {', '.join(allowed)})")
    for n in names:
        if n not in allowed:
            raise AlexKitError(f"unknown layer {n!r}: the layers are {', '.join(allowed)}")
    if len(set(names)) != len(names):
        raise AlexKitError(f"a layer is named twice in {','.join(names)}")
    return names


def layer_shapes(cfg: AlexNetConfig) -> dict[str, tuple[int, ...]]:
    """Each named layer's activation shape for one image: (C, H, W) for maps, (D,) for vectors."""
    stages = cfg.feature_shapes()
    out: dict[str, tuple[int, ...]] = {}
    for name in MAP_LAYERS:
        stage = name.replace("_pre", "")
        if stage.startswith("norm"):
            stage = "conv" + stage[-1]
        out[name] = stages[stage]
    for name in ("fc6_pre", "fc6", "fc7_pre", "fc7"):
        out[name] = (cfg.fc_features,)
    out["fc8"] = (cfg.num_classes,)
    return out


def feature_size(shape: tuple[int, ...], spatial: str) -> int:
    """Columns of one row for a layer of ``shape`` under ``spatial``: flatten keeps every value,
    max and mean keep one per map."""
    if spatial not in SPATIAL:
        raise AlexKitError(f"--spatial must be one of {', '.join(SPATIAL)}, not {spatial!r}")
    if len(shape) == 1 or spatial != "flatten":
        return shape[0]
    c, h, w = shape
    return c * h * w


@dataclass(frozen=True)
class ReceptiveField:
    """Where unit (y, x) of a map looks in the input: its window is ``size`` pixels wide,
    centred at ``start + jump * x`` (and the same in y), cut by the image's borders."""

    size: int
    jump: int
    start: float

    def box(self, y: int, x: int, image: int) -> tuple[int, int, int, int]:
        """(left, top, right, bottom) in pixels of an ``image``-square input, clipped to it."""
        half = self.size / 2
        cx, cy = self.start + self.jump * x, self.start + self.jump * y
        clip = lambda v: int(round(min(max(v, 0), image)))  # noqa: E731
        return clip(cx - half + 0.5), clip(cy - half + 0.5), clip(cx + half + 0.5), clip(cy + half + 0.5)


def receptive_field(cfg: AlexNetConfig, layer: str) -> ReceptiveField:
    """The receptive field of one unit of a map layer (conv1 11x11/4, pools 3/2, conv2 5x5, conv3-5 3x3)."""
    if layer not in MAP_LAYERS:
        raise AlexKitError(f"{layer} is not a map: receptive fields are for {', '.join(MAP_LAYERS)}")
    z, s = cfg.pool
    # (kernel, stride, padding) of each stage up to and including the layer's
    steps = {"conv1": (11, 4, cfg.conv1_padding), "pool1": (z, s, 0), "conv2": (5, 1, 2), "pool2": (z, s, 0),
             "conv3": (3, 1, 1), "conv4": (3, 1, 1), "conv5": (3, 1, 1), "pool5": (z, s, 0)}
    target = layer.replace("_pre", "")
    target = "conv" + target[-1] if target.startswith("norm") else target
    size, jump, start = 1, 1, 0.5  # the centre of input pixel 0 is at 0.5
    for name, (k, st, p) in steps.items():
        size += (k - 1) * jump
        start += ((k - 1) / 2 - p) * jump
        jump *= st
        if name == target:
            break
    return ReceptiveField(size, jump, start - 0.5)
