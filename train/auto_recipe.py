"""``--recipe auto``: width, batch and augmentation from the data's size and this machine's speed.

The rule (:func:`choose`, a pure function of the sizes and the measured speed;
docs/training.md has it as a table):

1. **Speed.** :func:`probe` times a few training steps of width ``s`` at batch
   16 on synthetic input (fp32, and bf16 autocast where the hardware has it;
   on a CPU on one thread and on all cores: the fastest is kept as ``--amp``
   and ``--threads``). The other widths' speeds are that speed divided by
   their measured cost (:data:`LEVELS`).
2. **Width.** The widest level the data warrants (:data:`DATA_CAP`, by
   training photos) whose speed still affords :data:`MIN_EPOCHS` passes over
   the data in the budget (90% of it: the rest goes to evaluation and
   checkpoints); else the narrowest, s. fc6/fc7 get at least twice the classes
   (in steps of 512). Without ``--budget`` the data alone decides.
3. **Batch.** 32 below 20,000 photos, 64 below 200,000, the paper's 128
   above; never more than an eighth of the photos.
4. **Augmentation**, by the passes the budget affords (or ``--epochs``):
   fewer than :data:`LIGHT_BELOW`: §4.1 as in the paper (a short run
   underfits; more noise only slows it); up to :data:`STRONG_FROM`: plus label
   smoothing 0.1; from it on: plus random-resized crops (35-100% of the area).

Every choice the command line gives (``--model.conv_channels``,
``--model.fc_features``, ``--batch-size``, ``--crop``, ``--crop-scale``,
``--label-smoothing``, ``--pca-std``, ``--amp``, ``--threads``) is kept, and the rule fills
in the rest. A ``--resume`` takes the choices of the run it continues (from its
training state), without probing again: the architecture must not change.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

#: where a Caltech-sized set ends and an ImageNet-sized one begins, for the batch
BATCH_STEPS = ((20_000, 32), (200_000, 64), (math.inf, 128))
#: fewer passes than this (as the probe predicts them): a narrower network that sees the data more often. Measured on
#: 2 CPU cores, 4,396 photos (docs/training.md): in 20 minutes width s with 24 passes beat m with 9 (the probe had
#: predicted 15 for m), and in 5 minutes s with 5-7 passes beat the narrower xs with 7-10 (so xs is no longer a choice)
MIN_EPOCHS = 20
LIGHT_BELOW = 8  # passes
STRONG_FROM = 30  # passes
PROBE_BATCH = 16
TRAIN_SHARE = 0.9  # of the budget: the rest is evaluation, checkpoints and start-up


@dataclass(frozen=True)
class Level:
    name: str
    conv_channels: tuple[int, int, int, int, int]
    fc_features: int
    #: CPU time per photo relative to width s in the same precision (batch 32, one thread, measured
    #: 2026-12-08 with benchmarks/bench_train_step.py --compare-widths; docs/benchmarks.md)
    cost_fp32: float
    cost_bf16: float

    def cost(self, amp: str) -> float:
        return self.cost_bf16 if amp == "bf16" else self.cost_fp32


#: the widths, narrowest first (the paper's topology: five conv layers in two towers, three fc layers)
LEVELS = (  # a narrower xs (24,48,72,72,48 / 512; cost 0.79 / 0.78) lost to s even where it got more passes
    Level("s", (32, 64, 96, 96, 64), 1024, 1.0, 1.0),
    Level("m", (48, 128, 192, 192, 128), 2048, 2.35, 1.97),
    Level("l", (64, 192, 288, 288, 192), 3072, 4.28, 3.58),
    Level("paper", (96, 256, 384, 384, 256), 4096, 7.98, 6.55),
)
#: the widest level a number of training photos warrants (more parameters than photos overfit)
DATA_CAP = ((2_000, "s"), (20_000, "m"), (200_000, "l"), (math.inf, "paper"))
#: what the auto choice sets, as recipe fields (``model.*``: the [model] table)
FIELDS = ("model.conv_channels", "model.fc_features", "batch_size", "crop", "crop_scale", "label_smoothing", "pca_std", "amp",
          "threads")


@dataclass
class Choice:
    level: str
    conv_channels: tuple[int, ...]
    fc_features: int
    batch_size: int
    augmentation: str  # light | medium | strong
    crop: str
    crop_scale: float
    label_smoothing: float
    pca_std: float
    epochs: float | None  # passes over the data the budget affords at this width (None: no budget)
    reason: str

    def fields(self) -> dict:
        return {"model.conv_channels": tuple(self.conv_channels), "model.fc_features": self.fc_features,
                "batch_size": self.batch_size, "crop": self.crop, "crop_scale": self.crop_scale,
                "label_smoothing": self.label_smoothing, "pca_std": self.pca_std}


def level(name: str) -> Level:
    return next(lv for lv in LEVELS if lv.name == name)


def choose(photos: int, classes: int, speed: float | None, budget_s: float | None, epochs: int = 30,
           amp: str = "fp32") -> Choice:
    """The auto choice for ``photos`` training photos of ``classes`` classes, when width s trains
    ``speed`` photos/s here in precision ``amp`` (fp32 or bf16), in ``budget_s`` seconds (None: no
    budget; ``epochs`` passes)."""
    cap = next(name for limit, name in DATA_CAP if photos < limit)
    allowed = LEVELS[: [lv.name for lv in LEVELS].index(cap) + 1]
    if budget_s is None or not speed:
        pick, passes = allowed[-1], None
        why = f"{photos:,} photos warrant up to width {cap}, and without a budget time does not limit it"
    else:
        fits = [lv for lv in allowed if speed / lv.cost(amp) * TRAIN_SHARE * budget_s / photos >= MIN_EPOCHS]
        pick = fits[-1] if fits else allowed[0]
        passes = speed / pick.cost(amp) * TRAIN_SHARE * budget_s / photos
        why = f"{photos:,} photos warrant up to width {cap}; " + (
            f"{pick.name} is the widest with {MIN_EPOCHS}+ passes in the budget" if fits
            else f"even width {pick.name} gets fewer than {MIN_EPOCHS} passes in the budget")
    batch = max(8, min(next(b for limit, b in BATCH_STEPS if photos < limit), photos // 8))
    fc = max(pick.fc_features, 512 * math.ceil(2 * classes / 512))
    n = passes if passes is not None else epochs
    if n < LIGHT_BELOW:
        aug, crop, ls = "light", "paper", 0.0
    elif n < STRONG_FROM:
        aug, crop, ls = "medium", "paper", 0.1
    else:
        aug, crop, ls = "strong", "rrc", 0.1
    return Choice(pick.name, pick.conv_channels, fc, batch, aug, crop, 0.35, ls, 0.1, passes, why)


def probe(classes: int, device, combos: tuple[tuple[str, int], ...] = (("fp32", 0),), steps: int = 2,
          batch: int = PROBE_BATCH) -> dict[tuple[str, int], float]:
    """Photos/s of width s's training step here for each (precision, torch threads; 0: torch's
    default): one warm-up step, then ``steps`` timed (synthetic input: the speed depends on the
    shapes, not the pixels). torch's thread count is restored afterwards."""
    import torch  # here, not at the top: the recipe's module tree stays torch-free

    from alexnet_kit.model import AlexNet, AlexNetConfig

    from .optim import PaperSGD
    from .trainer import train_step

    s = level("s")
    cfg = AlexNetConfig(num_classes=classes, conv_channels=s.conv_channels, fc_features=s.fc_features, init="kaiming")
    rng, threads = torch.get_rng_state(), torch.get_num_threads()
    torch.manual_seed(0)
    net = AlexNet(cfg).to(device).to(memory_format=torch.channels_last)
    torch.set_rng_state(rng)  # the run's own seeds are untouched
    opt = PaperSGD(net.parameters(), lr=1e-6)
    x = (torch.randn(batch, 3, cfg.input_size, cfg.input_size, device=device) * 50).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, classes, (batch,), device=device)
    speeds = {}
    try:
        for amp, n in combos:
            torch.set_num_threads(n or threads)
            dtype = torch.bfloat16 if amp == "bf16" else None
            float(train_step(net, opt, x, y, dtype)[0])  # warm-up, finished on the device
            t = time.perf_counter()
            for _ in range(steps):
                loss, _ = train_step(net, opt, x, y, dtype)
            float(loss)  # waits for the device
            speeds[(amp, n)] = steps * batch / (time.perf_counter() - t)
    finally:
        torch.set_num_threads(threads)
    return speeds


def describe(c: Choice, photos: int, classes: int, budget: str, speeds: dict[tuple[str, int], float], best: tuple[str, int],
             kept: list[str]) -> str:
    """The one line the auto recipe prints."""
    def combo(k):
        return f"{k[0]}" + (f" {k[1]} thread{'s' if k[1] > 1 else ''}" if k[1] else "")

    others = ", ".join(f"{combo(k)} {v:.0f}" for k, v in speeds.items() if k != best)
    fit = f"~{c.epochs:.1f} passes over the data fit the {budget} budget" if c.epochs is not None else "no budget"
    aug = {"light": "§4.1 crops and colour noise only", "medium": "§4.1 + label smoothing 0.1",
           "strong": f"random-resized crops ({c.crop_scale:g}-1 of the area) + label smoothing 0.1"}[c.augmentation]
    kept_txt = f"; kept from the command line: {', '.join(kept)}" if kept else ""
    return (f"auto: {photos:,} photos of {classes} classes; width s trains {speeds[best]:.0f} photos/s here in {combo(best)}"
            f"{f' ({others})' if others else ''} -> width {c.level} (conv {','.join(map(str, c.conv_channels))}, fc {c.fc_features}), "
            f"batch {c.batch_size}, {aug} ({c.augmentation} augmentation): {fit}; {c.reason}{kept_txt}")


def apply(recipe, data, given: set[str], resume: str | None = None, main: bool = True) -> Choice | None:
    """Fill in ``recipe``'s auto fields not in ``given`` (the recipe fields the command line set;
    ``model.NAME`` for the [model] table) for ``data`` (a PackedDataset), and print the one line."""
    from alexnet_kit.errors import AlexKitError

    if recipe.parallel == "data":
        raise AlexKitError("--recipe auto probes this process's speed, and data-parallel ranks could choose differently: "
                           "use another recipe, with the widths and batch you want")
    if resume:
        return _as_before(recipe, given, resume, main)
    # here, not at the top: the recipe's module tree stays torch-free
    from alexnet_kit.engines.cpu import native_bf16, usable_cores

    from .parallel import DistInfo, pick_device
    from .precision import cuda_bf16_native
    from .schedule import parse_duration

    device = pick_device(recipe.device, DistInfo())
    hw_bf16 = cuda_bf16_native() if device.type == "cuda" else native_bf16()
    amps = (("bf16",) if recipe.amp == "bf16" else ("fp32",)) if "amp" in given else (("fp32", "bf16") if hw_bf16 else ("fp32",))
    # on a CPU shared with other jobs one thread can beat several (measured 4.5x at load 11 on 2 cores: the
    # threads wait for each other): the probe tries one thread and all of them, unless --threads is given
    cores = usable_cores()
    threads = (recipe.threads,) if "threads" in given or device.type == "cuda" or cores < 2 else (1, cores)
    speeds = probe(data.num_classes, device, tuple((a, n) for a in amps for n in threads))
    amp, n = max(speeds, key=speeds.get)
    photos = len(data.split("train"))
    choice = choose(photos, data.num_classes, speeds[(amp, n)], parse_duration(recipe.budget) if recipe.budget else None,
                    recipe.epochs, amp)
    values = dict(choice.fields(), amp="bf16" if amp == "bf16" else "off", threads=n)
    _set(recipe, {k: v for k, v in values.items() if k not in given})
    if main:
        import sys

        kept = [k for k in FIELDS if k in given]
        print(describe(choice, photos, data.num_classes, recipe.budget, speeds, (amp, n), kept), file=sys.stderr)
    return choice


def _set(recipe, values: dict) -> None:
    for key, value in values.items():
        if key.startswith("model."):
            recipe.model = {**recipe.model, key[len("model."):]: value}
        else:
            setattr(recipe, key, value)


def _as_before(recipe, given: set[str], resume: str, main: bool) -> None:
    """``--resume``: the choices the run made when it started, read from its training state."""
    from pathlib import Path

    from alexnet_kit.errors import AlexKitError

    from . import training_state

    path = training_state.latest_state(Path(recipe.out) / "checkpoints") if resume == "latest" else Path(resume)
    if path is None:
        raise AlexKitError(f"--resume: no checkpoint in {Path(recipe.out) / 'checkpoints'} (nothing to resume; drop --resume to start)")
    before = training_state.load_state(path)["recipe"]
    values = {k: (before["model"][k[6:]] if k.startswith("model.") else before[k]) for k in FIELDS}
    _set(recipe, {k: (tuple(v) if isinstance(v, list) else v) for k, v in values.items() if k not in given})
    if main:
        import sys

        print(f"auto: as chosen when the run started ({', '.join(f'{k} {v}' for k, v in values.items())})", file=sys.stderr)
