"""Recipes: a TOML file of training settings, every value overridable on the command line.

``recipes/<name>.toml`` holds the top-level keys of :class:`Recipe` and a
``[model]`` table of :class:`~alexnet_kit.model.AlexNetConfig` fields
(``num_classes`` comes from the data). ``alexnet-kit train --recipe NAME``
loads one (a path works too); ``--lr 0.02`` or ``--model.init kaiming``
override single values (:func:`add_override_options` makes one option per
field).
"""
from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from alexnet_kit.errors import AlexKitError, FileProblem

# No torch at import time: `alexnet-kit --help` builds every subcommand's parser.

RECIPES = Path(__file__).parent / "recipes"
REPO = Path(__file__).resolve().parents[1]


@dataclass
class Recipe:
    name: str = "custom"
    data: str = ""  # a prepared folder, or a photo folder (prepared on the fly into `prepared`)
    prepared: str = ""  # where to pack a photo folder; default <out>/packed
    val_fraction: float = 0.2  # for a photo folder without train/val split: held out per class
    split_seed: int = 0
    out: str = "runs/train"
    epochs: int = 90
    batch_size: int = 128
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    lr_factor: float = 0.1
    lr_patience: int = 2
    lr_max_drops: int = 3
    lr_threshold: float = 1e-3
    pca_std: float = 0.1
    input_std: bool = False  # divide centred pixels by the training set's per-channel std (not in the paper)
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    parallel: str = "none"  # none | model | data
    model_devices: str = ""  # --parallel model: "cpu,cpu" or "cuda:0,cuda:1" (default: two GPUs, else cpu,cpu)
    workers: int = 2  # augmentation processes
    threads: int = 0  # torch threads for the training step; 0 = torch's default
    amp: str = "auto"  # auto (bf16 on CUDA, fp16 + loss scaling on GPUs without bf16) | bf16 | fp16 | off
    channels_last: str = "auto"  # auto (= on: faster on CUDA and on the CPU) | on | off
    compile: bool = False
    deterministic: bool = False
    checkpoint_every: int = 0  # steps between mid-epoch checkpoints (0: only at epoch ends)
    checkpoint_minutes: float = 10.0  # minutes between mid-epoch checkpoints (0: off); written in the background
    keep_last: int = 3
    eval_batch_size: int = 0  # 0: same as batch_size
    max_steps: int = 0  # stop after this many steps in total (0: no limit)
    stall_window: int = 50  # steps of loss near ln(classes) before the stall warning
    init_from: str = ""  # fine-tune: a checkpoint or pretrained name (caffe, torchvision, onnx-zoo); fc8 is replaced
    freeze: str = "none"  # fine-tune: none | conv | all (but fc8) | a comma list of layers
    pretrained_lr_mult: float = 1.0  # fine-tune: lr multiplier of the carried-over layers (fc8: 1)
    model: dict = field(default_factory=dict)

    def model_config(self, num_classes: int):
        from alexnet_kit.model import AlexNetConfig

        fields = dict(self.model)
        fields["num_classes"] = num_classes
        try:
            return AlexNetConfig.from_dict(fields)
        except (TypeError, ValueError) as e:
            raise AlexKitError(f"recipe {self.name}: bad [model] settings ({e})") from None

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["model"] = {k: list(v) if isinstance(v, tuple) else v for k, v in self.model.items()}
        return d


HELP = {
    "name": "a name for the run (recorded in the model's provenance)",
    "prepared": "where to pack a photo folder given as --data (default OUT/packed)",
    "val_fraction": "photo folder without val/: fraction of each class held out",
    "split_seed": "seed of that split",
    "epochs": "epochs in total (the paper: about 90)",
    "batch_size": "global batch (the paper: 128); split over DDP ranks",
    "lr": "initial learning rate (the paper: 0.01)",
    "momentum": "the paper: 0.9",
    "weight_decay": "the paper: 0.0005 (inside the velocity, §5)",
    "lr_factor": "lr multiplier on a plateau (the paper: 0.1)",
    "lr_patience": "epochs without validation gain before lr drops",
    "lr_max_drops": "at most this many drops (the paper: 3)",
    "lr_threshold": "smaller validation-error gains do not count",
    "pca_std": "sigma of the §4.1 PCA colour noise (the paper: 0.1; 0 = off)",
    "input_std": "true: divide centred pixels by the per-channel std (not in the paper)",
    "seed": "seed of initialisation, data order, augmentation and dropout",
    "device": "auto | cpu | cuda | cuda:N",
    "parallel": "none | model (two towers, §3.2) | data (DDP under torchrun)",
    "model_devices": "--parallel model: e.g. cuda:0,cuda:1 (default: two GPUs, else the device twice)",
    "workers": "augmentation worker processes (0: in the training process)",
    "threads": "torch threads (0: torch's default)",
    "amp": "auto (bf16 on CUDA; fp16 + loss scaling on GPUs without bf16) | bf16 | fp16 | off",
    "channels_last": "auto (= on; measured faster on CUDA and CPU) | on | off",
    "compile": "torch.compile the network",
    "deterministic": "deterministic kernels (bitwise resume on CPU)",
    "checkpoint_every": "also save a training state every N steps (0: off)",
    "checkpoint_minutes": "also save a training state every M minutes (0: off; default 10), written in the background",
    "keep_last": "training states kept (plus best.pt)",
    "eval_batch_size": "validation batch (0: twice --batch-size)",
    "max_steps": "stop after N steps in all (0: no limit)",
    "stall_window": "steps of loss near ln(classes) before the stall warning",
    "init_from": "fine-tune: start from this checkpoint or pretrained name (caffe, torchvision, onnx-zoo); "
                 "its architecture and normalisation are kept, fc8 gets the data's classes and fresh weights",
    "freeze": "fine-tune: layers kept bit for bit: none, conv (conv1-5), all (all but fc8) or e.g. conv1,conv2",
    "pretrained_lr_mult": "fine-tune: learning-rate multiplier of the carried-over layers, e.g. 0.1 (fc8 always 1)",
}
CHOICES = {"parallel": ("none", "model", "data"), "amp": ("auto", "bf16", "fp16", "off"), "channels_last": ("auto", "on", "off")}


def validate(r: Recipe) -> Recipe:
    for key, allowed in CHOICES.items():
        if getattr(r, key) not in allowed:
            raise AlexKitError(f"{key.replace('_', '-')} must be one of {', '.join(allowed)}, not {getattr(r, key)!r}")
    for key in ("epochs", "batch_size"):
        if getattr(r, key) < 1:
            raise AlexKitError(f"{key.replace('_', '-')} must be at least 1")
    if r.lr <= 0:
        raise AlexKitError("lr must be positive")
    if not r.init_from and (r.freeze not in ("", "none") or r.pretrained_lr_mult != 1.0):
        raise AlexKitError("--freeze and --pretrained-lr-mult need --init-from MODEL (the model to fine-tune)")
    if r.init_from:
        from .finetune import parse_freeze

        parse_freeze(r.freeze)
    return r


def available() -> list[str]:
    return sorted(p.stem for p in RECIPES.glob("*.toml"))


def load_recipe(name_or_path: str) -> Recipe:
    path = Path(name_or_path)
    if not path.suffix:
        path = RECIPES / f"{name_or_path}.toml"
        if not path.is_file():
            raise AlexKitError(f"no recipe {name_or_path!r}; shipped recipes: {', '.join(available())}, or give a .toml file")
    try:
        d = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise FileProblem(path, f"not a readable recipe ({e})") from None
    known = {f.name for f in dataclasses.fields(Recipe)}
    unknown = set(d) - known
    if unknown:
        raise FileProblem(path, f"unknown recipe keys {sorted(unknown)}")
    d.setdefault("name", path.stem)
    return Recipe(**d)


# -- command-line overrides -------------------------------------------------
# AlexNetConfig's fields (less num_classes, which the data decides) and their
# types, spelled out so that building the parser needs no torch; a test
# checks this table against the dataclass.
_MODEL_FIELDS = {
    "conv_channels": tuple, "fc_features": int, "towers": int, "input_size": int, "activation": str,
    "lrn": bool, "lrn_convention": str, "lrn_size": int, "lrn_alpha": float, "lrn_beta": float,
    "lrn_k": float, "overlapping_pool": bool, "dropout": float, "init": str,
    "conv1_padding": int, "lrn_scope": str, "ceil_pool": bool,
}


def _parse(kind, text: str):
    if kind is bool:
        low = text.lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"not a boolean: {text!r}")
    if kind is tuple:
        return tuple(int(v) for v in text.split(","))
    return kind(text)


def _kind(default) -> type:
    return type(default) if not isinstance(default, tuple) else tuple


def add_override_options(parser) -> None:
    g = parser.add_argument_group("recipe overrides (each replaces one value of the recipe)")
    for f in dataclasses.fields(Recipe):
        if f.name == "model":
            continue
        default = f.default
        g.add_argument(f"--{f.name.replace('_', '-')}", dest=f"r_{f.name}", metavar=_kind(default).__name__.upper(), default=None,
                       help=HELP.get(f.name) or ("prepared folder or photo folder" if f.name == "data" else "run folder: checkpoints, logs, model.safetensors"))
    for name, kind in _MODEL_FIELDS.items():
        g.add_argument(f"--model.{name}", dest=f"m_{name}", metavar="INTS" if kind is tuple else kind.__name__.upper(), default=None)


def apply_overrides(recipe: Recipe, args) -> Recipe:
    for f in dataclasses.fields(Recipe):
        v = getattr(args, f"r_{f.name}", None)
        if v is not None and f.name != "model":
            try:
                setattr(recipe, f.name, _parse(_kind(f.default), v))
            except ValueError as e:
                raise AlexKitError(f"--{f.name.replace('_', '-')}: {e}") from None
    model = dict(recipe.model)
    for name, kind in _MODEL_FIELDS.items():
        v = getattr(args, f"m_{name}", None)
        if v is not None:
            try:
                model[name] = _parse(kind, v)
            except ValueError as e:
                raise AlexKitError(f"--model.{name}: {e}") from None
    recipe.model = model
    return validate(recipe)


def resolve_data(path: str) -> Path:
    """A relative data path from the current folder, else from the repository (shipped examples)."""
    p = Path(path)
    if p.exists() or p.is_absolute():
        return p
    if (REPO / p).exists():
        return REPO / p
    return p
