"""The network's configuration, and settings whose fields describe themselves (no torch).

A setting is declared once, as a dataclass field made by :func:`option`: its
default, its help text and, where only some values make sense, its choices.
Everything else is read from the fields: :func:`check_values` refuses a
wrong type or a value outside the choices with one line naming the field,
and :func:`add_options` / :func:`given_options` turn the fields into
command-line options. :class:`AlexNetConfig` (the architecture) and the
training recipe (``alexnet_kit.train.recipe.Recipe``) are both built this
way, so ``alexnet-kit train --help`` lists every field with its help
without importing torch.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from .errors import AlexKitError

# Choices of AlexNetConfig fields that other modules check against too.
INIT_SCHEMES = ("paper", "caffe", "kaiming")
ACTIVATIONS = ("relu", "tanh")
LRN_CONVENTIONS = ("paper", "divided")
LRN_SCOPES = ("tower", "all")


def option(default, help: str, choices: tuple | None = None):
    """A dataclass field with its help text and, optionally, the values it may take."""
    meta = {"help": help}
    if choices is not None:
        meta["choices"] = tuple(choices)
    if isinstance(default, (list, dict, set)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def kind(f: dataclasses.Field) -> type:
    """The type a field's values have, read from its default (tuples: of ints)."""
    default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
    return tuple if isinstance(default, (tuple, list)) else type(default)


def problem(f: dataclasses.Field, value, types: bool = False) -> str | None:
    """Why ``value`` cannot be field ``f``'s: not one of its choices (or, with ``types``, of the wrong type)."""
    k = kind(f)
    if types:
        if k is bool:
            ok = isinstance(value, bool)
        elif k is int:
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif k is float:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        elif k is tuple:
            ok = isinstance(value, (list, tuple)) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
        else:
            ok = isinstance(value, k)
        if not ok:
            want = {bool: "true or false", int: "an integer", float: "a number", tuple: "a list of integers", str: "a string"}
            return f"must be {want.get(k, k.__name__)}, not {value!r}"
    allowed = f.metadata.get("choices")
    if allowed is not None and value not in allowed:
        return f"must be one of {', '.join(map(str, allowed))}, not {value!r}"
    return None


def check_values(cls, values: dict, *, types: bool = False, prefix: str = "", error: type[Exception] = ValueError) -> None:
    """Refuse the first value outside its field's choices (or, with ``types``, of the wrong type).

    The one place choices are enforced. The message is one line that names
    the field (``prefix`` + name), what it must be, and the value given.
    Names that are not fields of ``cls`` are left to the caller.
    """
    for f in dataclasses.fields(cls):
        if f.name in values:
            why = problem(f, values[f.name], types)
            if why:
                raise error(f"{prefix}{f.name} {why}")


def configs_differ(a: dict, b: dict) -> bool:
    """True when two config dicts (``to_dict`` form) describe different values, lists vs tuples aside."""
    norm = lambda d: {k: (list(v) if isinstance(v, (list, tuple)) else v) for k, v in d.items()}  # noqa: E731
    return norm(a) != norm(b)


def _field_values(obj) -> dict:
    return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}


# -- command line -------------------------------------------------------------

def flag(name: str, prefix: str = "") -> str:
    """``--lr-factor`` for a top-level field; ``--model.lrn_size`` (the TOML table's spelling) under a prefix."""
    return f"--{prefix}.{name}" if prefix else f"--{name.replace('_', '-')}"


def parse_text(k: type, text: str):
    """A command-line string as a value of type ``k`` (ValueError if it is not one)."""
    if k is bool:
        low = text.lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"not a boolean: {text!r}")
    if k is tuple:
        try:
            return tuple(int(v) for v in text.split(","))
        except ValueError:
            raise ValueError(f"not a comma-separated list of integers: {text!r}") from None
    return k(text)


def _chosen(cls, skip: tuple, only: tuple | None) -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(cls) if f.name not in skip and (only is None or f.name in only)]


def add_options(group, cls, *, prefix: str = "", dest: str = "", skip: tuple = (), only: tuple | None = None,
                show_defaults: bool = False) -> None:
    """One option per field of ``cls`` (help from the field; None when not given).

    Values stay strings here and are read by :func:`given_options`, so a bad
    one is refused in one line like every other error, not by argparse.
    ``show_defaults``: the help names the field's default (leave it off where
    a recipe, not the field, decides the value).
    """
    for f in _chosen(cls, skip, only):
        k, allowed = kind(f), f.metadata.get("choices")
        metavar = "{" + ",".join(allowed) + "}" if allowed else ("INTS" if k is tuple else k.__name__.upper())
        text = f.metadata.get("help", "")
        if show_defaults:
            text += f" (default: {f.default})"
        group.add_argument(flag(f.name, prefix), dest=dest + f.name, metavar=metavar, default=None, help=text)


def given_options(args, cls, *, prefix: str = "", dest: str = "", skip: tuple = (), only: tuple | None = None) -> dict:
    """The fields given on the command line, parsed and checked: {name: value}."""
    out = {}
    for f in _chosen(cls, skip, only):
        text = getattr(args, dest + f.name, None)
        if text is None:
            continue
        try:
            value = parse_text(kind(f), text)
        except ValueError as e:
            raise AlexKitError(f"{flag(f.name, prefix)}: {e}") from None
        why = problem(f, value)
        if why:
            raise AlexKitError(f"{flag(f.name, prefix)} {why}")
        out[f.name] = value
    return out


# -- the network -----------------------------------------------------------------

@dataclass(frozen=True)
class AlexNetConfig:
    """The architecture (§3). The defaults are the paper's network: 60,965,224 parameters."""

    num_classes: int = option(1000, "classes: fc8's outputs (a recipe takes them from the data)")
    conv_channels: tuple[int, int, int, int, int] = option(
        (96, 256, 384, 384, 256), "kernels of conv1..conv5, comma-separated (the paper: 96,256,384,384,256); each splits into the towers")
    fc_features: int = option(4096, "units of fc6 and fc7 (the paper: 4096)")
    towers: int = option(2, "§3.2: the two-GPU split, as grouped convolutions; 1 = the single-tower variant")
    input_size: int = option(224, "side of the input crops (§2: 224x224 crops of 256x256 images)")
    activation: str = option("relu", "§3.1 relu; tanh for the Figure 1 comparison", ACTIVATIONS)
    lrn: bool = option(True, "§3.3 local response normalisation after conv1 and conv2")
    lrn_convention: str = option(
        "paper", "LRN alpha on the sum (paper: the paper's formula) or on the mean (divided: alpha/n, as cuda-convnet, "
        "Caffe, PyTorch and ONNX); see alexnet_kit.lrn", LRN_CONVENTIONS)
    lrn_size: int = option(5, "§3.3 n: maps in the LRN window (the paper: 5)")
    lrn_alpha: float = option(1e-4, "§3.3 alpha (the paper: 1e-4)")
    lrn_beta: float = option(0.75, "§3.3 beta (the paper: 0.75)")
    lrn_k: float = option(2.0, "§3.3 k (the paper: 2)")
    overlapping_pool: bool = option(True, "§3.4 overlapping max-pooling, z=3, s=2; false gives s=z=2")
    # The three fields below exist for imported weights; their defaults are the paper's.
    conv1_padding: int = option(2, "conv1 padding: 2 turns 224 crops into 55x55 maps (§3.5); Caffe's 227 crops need 0")
    lrn_scope: str = option("tower", "tower: LRN over each GPU's own maps (§3.3); all: across every map (Caffe)", LRN_SCOPES)
    ceil_pool: bool = option(False, "pooling output rounds up (Caffe); the ONNX zoo's 224 input needs it for 6x6 maps")
    dropout: float = option(0.5, "§4.2 dropout probability in fc6 and fc7 (the paper: 0.5)")
    init: str = option(
        "paper", "§5 initialisation: paper (N(0, 0.01), biases 1 in conv2/4/5, fc6, fc7), caffe (biases 0.1, std 0.005 "
        "in fc6/fc7) or kaiming (He et al. 2015, not in the paper)", INIT_SCHEMES)

    def __post_init__(self):
        object.__setattr__(self, "conv_channels", tuple(int(c) for c in self.conv_channels))
        if len(self.conv_channels) != 5:
            raise ValueError("conv_channels needs five values")
        check_values(type(self), _field_values(self))
        if self.conv1_padding < 0:
            raise ValueError("conv1_padding must be >= 0")
        for c in self.conv_channels:
            if c % self.towers:
                raise ValueError(f"{c} channels do not split into {self.towers} towers")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "AlexNetConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown architecture fields: {sorted(unknown)}")
        return cls(**d)

    @property
    def pool(self) -> tuple[int, int]:
        """(kernel z, stride s) of the max-pooling layers, §3.4."""
        return (3, 2) if self.overlapping_pool else (2, 2)

    @property
    def lrn_groups(self) -> int:
        """Groups of maps LRN normalises within: the towers, or 1 (every map, as Caffe does)."""
        return self.towers if self.lrn_scope == "tower" else 1

    def pooled(self, n: int) -> int:
        """Output size of a max-pooling layer on n x n maps."""
        z, s = self.pool
        if self.ceil_pool:
            return -(-(n - z) // s) + 1  # no padding, so every window starts inside the map
        return (n - z) // s + 1

    def feature_shapes(self) -> dict[str, tuple[int, int, int]]:
        """(channels, height, width) after each stage, computed like the layers."""
        c1, c2, c3, c4, c5 = self.conv_channels
        n = (self.input_size + 2 * self.conv1_padding - 11) // 4 + 1  # conv1 11x11/4
        shapes = {"conv1": (c1, n, n)}
        n = self.pooled(n)
        shapes["pool1"] = (c1, n, n)
        shapes["conv2"] = (c2, n, n)
        n = self.pooled(n)
        shapes["pool2"] = (c2, n, n)
        shapes["conv3"] = (c3, n, n)
        shapes["conv4"] = (c4, n, n)
        shapes["conv5"] = (c5, n, n)
        n = self.pooled(n)
        shapes["pool5"] = (c5, n, n)
        return shapes

    @property
    def flat_features(self) -> int:
        return math.prod(self.feature_shapes()["pool5"])
