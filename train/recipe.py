"""Recipes: a TOML file of training settings, every value overridable on the command line.

``recipes/<name>.toml`` holds the top-level keys of :class:`Recipe` and a
``[model]`` table of :class:`~alexnet_kit.config.AlexNetConfig` fields
(``num_classes`` comes from the data). ``alexnet-kit train --recipe NAME``
loads one (a path works too); ``--lr 0.02`` or ``--model.init kaiming``
override single values. Each setting is declared once, as a field with its
help and choices (:func:`alexnet_kit.config.option`); the command-line
options, their help and the checks are read from the fields.
"""
from __future__ import annotations

import dataclasses
try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser, from PyPI
    import tomli as tomllib
from dataclasses import dataclass
from pathlib import Path

# No torch at import time: `alexnet-kit --help` builds every subcommand's parser.
from alexnet_kit.config import AlexNetConfig, add_options, check_values, given_options, option
from alexnet_kit.errors import AlexKitError, FileProblem
from alexnet_kit.paths import repo_path

from .schedule import BUDGET_DEFAULT, KINDS, parse_duration

RECIPES = Path(__file__).parent / "recipes"

# The data decides the number of classes (a [model] value is overridden);
# every other AlexNetConfig field is a [model] setting and a --model.NAME option.
_FROM_DATA = ("num_classes",)
CROPS = ("paper", "rrc")


@dataclass
class Recipe:
    name: str = option("custom", "a name for the run (recorded in the model's provenance)")
    data: str = option("", "prepared folder or photo folder (a photo folder is packed first into --prepared)")
    prepared: str = option("", "where to pack a photo folder given as --data (default OUT/packed)")
    val_fraction: float = option(0.2, "photo folder without val/: fraction of each class held out")
    split_seed: int = option(0, "seed of that split")
    out: str = option("runs/train", "run folder: checkpoints, logs, model.safetensors")
    epochs: int = option(90, "epochs in total (the paper: about 90)")
    batch_size: int = option(128, "global batch (the paper: 128); split over DDP ranks")
    lr: float = option(0.01, "initial learning rate (the paper: 0.01)")
    momentum: float = option(0.9, "the paper: 0.9")
    weight_decay: float = option(5e-4, "the paper: 0.0005 (inside the velocity, §5)")
    lr_factor: float = option(0.1, "lr multiplier on a plateau (the paper: 0.1)")
    lr_patience: int = option(2, "epochs without validation gain before lr drops")
    lr_max_drops: int = option(3, "at most this many drops (the paper: 3)")
    lr_threshold: float = option(1e-3, "smaller validation-error gains do not count")
    budget: str = option("", "wall-clock budget, e.g. 90s, 20m, 2h, 1h30m: the run, its evaluations and the final model end "
                             "within it, and --epochs no longer limits it (empty: no budget); --resume continues with what is left")
    schedule: str = option("auto", f"learning-rate schedule: plateau (§5: /10 when validation stops improving), cosine or "
                                   f"linear (a warm-up, then down to 0 at the end of the budget, or of the epochs), auto "
                                   f"(plateau without --budget, {BUDGET_DEFAULT} with one)", KINDS)
    warmup: float = option(0.03, "cosine/linear: warm-up from 0 over this fraction of the training (its time under --budget)")
    label_smoothing: float = option(0.0, "label smoothing of the training loss (not in the paper: 0 = off)")
    crop: str = option("paper", "training crops: paper (§4.1: random 224x224 patches of the 256x256 photos) or rrc "
                                "(random-resized crops: a random area and aspect ratio resized to 224; not in the paper)",
                       CROPS)
    crop_scale: float = option(0.35, "crop rrc: a crop covers this fraction to all of the photo's area (torchvision: 0.08)")
    pca_std: float = option(0.1, "sigma of the §4.1 PCA colour noise (the paper: 0.1; 0 = off)")
    input_std: bool = option(False, "true: divide centred pixels by the training set's per-channel std (not in the paper)")
    seed: int = option(0, "seed of initialisation, data order, augmentation and dropout")
    device: str = option("auto", "auto | cpu | cuda | cuda:N")
    parallel: str = option("none", "none | model (two towers, §3.2) | data (DDP under torchrun)", ("none", "model", "data"))
    model_devices: str = option("", "--parallel model: e.g. cuda:0,cuda:1 (default: two GPUs, else the device twice)")
    workers: int = option(2, "augmentation worker processes (0: in the training process)")
    threads: int = option(0, "torch threads for the training step (0: torch's default)")
    amp: str = option("auto", "auto (bf16 on a GPU or CPU that has it in hardware; fp16 + loss scaling on GPUs without; "
                              "else fp32) | bf16 | fp16 | off", ("auto", "bf16", "fp16", "off"))
    force_amp: bool = option(False, "--amp bf16 on a CPU without native bf16 (emulated, slow): run it anyway")
    channels_last: str = option("auto", "auto (= on; measured faster on CUDA and CPU) | on | off", ("auto", "on", "off"))
    compile: bool = option(False, "torch.compile the network")
    deterministic: bool = option(False, "deterministic kernels (bitwise resume on CPU)")
    checkpoint_every: int = option(0, "also save a training state every N steps (0: off)")
    checkpoint_minutes: float = option(10.0, "also save a training state every M minutes (0: off; default 10), written in the background")
    keep_last: int = option(3, "training states kept (plus best.pt)")
    eval_batch_size: int = option(0, "validation batch (0: twice --batch-size)")
    max_steps: int = option(0, "stop after N steps in all (0: no limit)")
    stall_window: int = option(50, "steps of loss near ln(classes) before the stall warning")
    init_from: str = option("", "fine-tune: start from this checkpoint or pretrained name (caffe, torchvision, onnx-zoo); "
                                "its architecture and normalisation are kept, fc8 gets the data's classes and fresh weights")
    freeze: str = option("none", "fine-tune: layers kept bit for bit: none, conv (conv1-5), all (all but fc8) or e.g. conv1,conv2")
    pretrained_lr_mult: float = option(1.0, "fine-tune: learning-rate multiplier of the carried-over layers, e.g. 0.1 (fc8 always 1)")
    model: dict = option({}, "the [model] table: AlexNetConfig fields, each also a --model.NAME option")

    def model_config(self, num_classes: int) -> AlexNetConfig:
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


def validate(r: Recipe) -> Recipe:
    check_values(Recipe, {f.name: getattr(r, f.name) for f in dataclasses.fields(Recipe)}, error=AlexKitError)
    r.model_config(AlexNetConfig().num_classes)  # the [model] table is refused now, not after packing the data
    for key in ("epochs", "batch_size"):
        if getattr(r, key) < 1:
            raise AlexKitError(f"{key.replace('_', '-')} must be at least 1")
    if r.lr <= 0:
        raise AlexKitError("lr must be positive")
    if r.budget:
        parse_duration(r.budget)
    for key, lo, hi in (("label_smoothing", 0.0, 0.999), ("warmup", 0.0, 0.5), ("crop_scale", 0.01, 1.0)):
        if not lo <= getattr(r, key) <= hi:
            raise AlexKitError(f"{key.replace('_', '-')} must be between {lo:g} and {hi:g}, not {getattr(r, key)}")
    if not r.init_from and (r.freeze not in ("", "none") or r.pretrained_lr_mult != 1.0):
        raise AlexKitError("--freeze and --pretrained-lr-mult need --init-from MODEL (the model to fine-tune)")
    if r.init_from:
        from .finetune import parse_freeze  # here, not at the top: finetune loads torch (see the imports)

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
    unknown = set(d) - {f.name for f in dataclasses.fields(Recipe)}
    if unknown:
        raise FileProblem(path, f"unknown recipe keys {sorted(unknown)}")
    model = d.get("model", {})
    if not isinstance(model, dict):
        raise FileProblem(path, "model must be a [model] table")
    unknown = set(model) - {f.name for f in dataclasses.fields(AlexNetConfig)}
    if unknown:
        raise FileProblem(path, f"unknown [model] keys {sorted(unknown)}")
    try:
        check_values(Recipe, {k: v for k, v in d.items() if k != "model"}, types=True)
        check_values(AlexNetConfig, model, types=True, prefix="model.")
    except ValueError as e:
        raise FileProblem(path, str(e)) from None
    d.setdefault("name", path.stem)
    return Recipe(**d)


# -- command-line overrides -------------------------------------------------

def add_override_options(parser) -> None:
    g = parser.add_argument_group("recipe overrides (each replaces one value of the recipe)")
    add_options(g, Recipe, dest="r_", skip=("model", "force_amp"))
    # a bare flag (read as "true" by apply_overrides, like every other override)
    force = next(f for f in dataclasses.fields(Recipe) if f.name == "force_amp")
    g.add_argument("--force-amp", dest="r_force_amp", action="store_const", const="true", default=None, help=force.metadata["help"])
    m = parser.add_argument_group("network overrides (each replaces one value of the recipe's [model] table)")
    add_options(m, AlexNetConfig, prefix="model", dest="m_", skip=_FROM_DATA)


def apply_overrides(recipe: Recipe, args) -> Recipe:
    for name, value in given_options(args, Recipe, dest="r_", skip=("model",)).items():
        setattr(recipe, name, value)
    recipe.model = {**recipe.model, **given_options(args, AlexNetConfig, prefix="model", dest="m_", skip=_FROM_DATA)}
    return validate(recipe)


def given_fields(args) -> set[str]:
    """The recipe fields the command line set (``model.NAME`` for the [model] table's)."""
    names = set(given_options(args, Recipe, dest="r_", skip=("model",)))
    return names | {f"model.{k}" for k in given_options(args, AlexNetConfig, prefix="model", dest="m_", skip=_FROM_DATA)}


def resolve_data(path: str) -> Path:
    """A relative data path from the current folder, else from the checkout (the quickstart's
    examples/quickstart-data); outside a checkout a missing one fails in one line naming --data."""
    return repo_path(path, "--data")
