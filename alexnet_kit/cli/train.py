"""``alexnet-kit train``: train the network with a recipe (recipes/*.toml in alexnet_kit.train)."""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from alexnet_kit.errors import AlexKitError
from alexnet_kit.interrupt import StopOnSignal, signal_name


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train the network from a recipe (paper, quickstart, ...)",
        description="Train with the paper's recipe (§5) or another one. A recipe is a TOML file; every value "
        "can be overridden below. --data may be a prepared folder or a photo folder (packed first into "
        "OUT/packed). The result is OUT/model.safetensors (best validation epoch), ready for "
        "`alexnet-kit classify --model`. SIGTERM or Ctrl-C (SIGINT) finishes the current step, saves a "
        "training state and exits with status 128 + the signal (143, 130); a second signal aborts at once. "
        "The same command with --resume continues exactly. A fresh run never replaces an earlier run in "
        "--out: it is refused unless --overwrite is given. --budget 20m trains to a wall-clock budget: the "
        "learning rate follows the clock and the final evaluation and model are written before it ends.",
        epilog="Data parallel: torchrun --standalone --nproc_per_node N -m alexnet_kit train --parallel data ...",
    )
    p.add_argument("--recipe", default="quickstart", help="a shipped recipe name (paper, quickstart, caltech10, finetune, auto: "
                   "width, batch and augmentation chosen from the data and a probe of this machine) or a .toml path (default: quickstart)")
    p.add_argument("--resume", nargs="?", const="latest", default=None, metavar="STATE",
                   help="continue from OUT/checkpoints (latest), or from this training-state file")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an earlier run in --out (its training states, models, metrics and logs; "
                        "OUT/packed and other files stay); without it a fresh run there is refused")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    # here, not at the top: the runtime imports a stage only inside a command (recipe itself is torch-free)
    from alexnet_kit.train.recipe import add_override_options

    add_override_options(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    # here, not at the top: the runtime imports the training stage only inside its command (packed loads numpy)
    from alexnet_kit.train.schedule import format_duration, process_age

    started = time.monotonic() - process_age()  # a --budget counts from this command's start
    from alexnet_kit.train.packed import PackedDataset, is_prepared
    from alexnet_kit.train.recipe import apply_overrides, load_recipe, resolve_data
    from alexnet_kit.train.runfolder import STOP_NOTICE, refuse_earlier_run

    recipe = apply_overrides(load_recipe(args.recipe), args)
    # before anything is packed or written (every DDP rank makes the same read-only check)
    refuse_earlier_run(recipe.out, args.resume, args.overwrite)
    if not recipe.data:
        raise AlexKitError(f"recipe {recipe.name} names no data: give --data (a prepared folder or a photo folder)")
    data = resolve_data(recipe.data)
    if not data.exists():
        raise AlexKitError(f"{data}: no such folder")
    if not is_prepared(data) and recipe.parallel == "data":
        raise AlexKitError(f"{data}: prepare it first (`alexnet-kit prepare {data} DST`) when training data parallel")
    main = recipe.parallel != "data" or os.environ.get("RANK", "0") == "0"
    # one StopOnSignal from here on: a signal while packing, setting up or training ends cleanly
    with StopOnSignal(STOP_NOTICE if main else None) as stop:
        if not is_prepared(data):
            from alexnet_kit.train.prepare import prepare  # here, not at the top: packing loads numpy

            packed = Path(recipe.prepared or Path(recipe.out) / "packed")
            print(f"{data} is a photo folder: packing it into {packed} first", file=sys.stderr)
            prepare(data, packed, val_fraction=recipe.val_fraction, seed=recipe.split_seed, progress=not args.quiet, stop=stop)
            if stop.signum:  # it came as the packing finished
                stop.raise_if_requested(f"stopped by {signal_name(stop.signum)} after packing {data} into {packed}; "
                                        f"run the same command again to train")
            data = packed
        recipe.data = str(data)
        dataset = PackedDataset(data)
        if args.recipe == "auto":  # width, batch, augmentation and precision from the data and a probe of this machine
            from alexnet_kit.train.auto_recipe import apply
            from alexnet_kit.train.recipe import given_fields, validate

            apply(recipe, dataset, given_fields(args), resume=args.resume, main=main)
            validate(recipe)
        from alexnet_kit.train.trainer import Trainer  # here, not at the top: the trainer loads torch

        trainer = Trainer(recipe, dataset, resume=args.resume, progress=not args.quiet,
                          overwrite=args.overwrite, stop=stop, started=started)
        trainer.setup()
        try:
            outcome = trainer.train()  # Interrupted on a signal, after the state is saved
        finally:
            trainer.cleanup()
    if trainer.dist.main:
        best = Path(recipe.out) / "model.safetensors"
        spent = (f" in {format_duration(trainer.budget.elapsed())} of the {recipe.budget} budget"
                 if trainer.budget is not None else "")
        print(f"{outcome}: {trainer.epoch} epochs, {trainer.global_step} steps{spent}; best validation top-1 error "
              f"{100 * trainer.best_val:.1f}%; model: {best}" if trainer.history else f"{outcome} after {trainer.global_step} steps")
    return 0
