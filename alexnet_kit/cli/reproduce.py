"""``alexnet-kit reproduce fig1|ablations|fig3|fig4``: the paper's claims, with our numbers.

Each experiment writes ``NAME.json`` (results, seeds, spread, machine) and
``NAME.png`` under ``--out``. ``--size tiny`` runs in seconds (the tests),
``default`` fits 2 CPU cores, ``full`` is for a GPU. See docs/experiments.md.

SIGTERM or Ctrl-C stops the runs in progress at their next training step
and exits with status 128 + the signal; finished stages stay in
``--out`` (``*.partial.*.json``) and the same command continues from them.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import AlexKitError
from ..interrupt import Interrupted, signal_name
from ..resolve import resolve_model

EXPERIMENTS = {
    "fig1": "Figure 1: ReLU vs tanh, epochs to 25%% training error on CIFAR-10 (§3.1)",
    "ablations": "LRN, overlapping pooling, dropout, PCA colour noise, ten-crop: each taken away (Caltech-101)",
    "fig3": "Figure 3: the first-layer kernels of a trained model, one block per tower",
    "fig4": "Figure 4: top-5 predictions and the nearest training photos by fc7 distance",
}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("reproduce", help="re-run one of the paper's experiments (results JSON + PNG)",
                       description="Re-run one of the paper's experiments at a chosen size; writes NAME.json and NAME.png. "
                       "SIGTERM or Ctrl-C stops at the next training step (exit status 128 + the signal); finished "
                       "stages are kept in --out and the same command continues from them.",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog="experiments:\n" + "\n".join(f"  {k:10s} {v}" for k, v in EXPERIMENTS.items()).replace("%%", "%"))
    p.add_argument("experiment", choices=sorted(EXPERIMENTS), help="which experiment")
    p.add_argument("--out", default="experiments/results", help="folder for NAME.json and NAME.png (default: %(default)s)")
    p.add_argument("--size", choices=("tiny", "default", "full"), default="default",
                   help="tiny: seconds (tests); default: 2 CPU cores; full: a GPU (default: %(default)s)")
    p.add_argument("--seeds", type=int, help="number of seeds (fig1, ablations; default: the size's)")
    p.add_argument("--epochs", type=int, help="fig1: epoch cap; ablations: epochs per run (default: the size's)")
    p.add_argument("--lrs", help="fig1: comma-separated starting learning rates (at least two) for both activations; the sweep grows past "
                        "its edge while the best rate sits there (default: the size's)")
    p.add_argument("--init", choices=("default", "he"), default="default",
                   help="fig1: cuda-convnet's per-layer Gaussian init (initW) for both (default), or each activation's He gain (writes fig1_relu_tanh_init-he.*)")
    p.add_argument("--variants", help="ablations: comma-separated subset of full,no_lrn,no_overlap,no_dropout,no_pca")
    p.add_argument("--model", help="fig3/fig4: checkpoint (default: newest under runs/, else the ablations' full model)")
    p.add_argument("--queries", type=int, default=5, help="fig4: test photos (default: %(default)s)")
    p.add_argument("--neighbours", type=int, default=6, help="fig4: nearest training photos per test photo (default: %(default)s)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ... (fig1, ablations; default: %(default)s)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from alexnet_kit.train.experiments.common import Stopped, stop_on_signal  # here, not at the top: it loads torch

    for name in ("seeds", "epochs", "queries", "neighbours"):
        v = getattr(args, name)
        if v is not None and v < 1:
            raise AlexKitError(f"--{name} must be at least 1, got {v}")
    try:
        with stop_on_signal():
            _run(args)
    except Stopped as e:
        kept = sorted(p.name for p in Path(args.out).glob("*.partial.*.json"))
        raise Interrupted(e.signum, f"stopped by {signal_name(e.signum)}: "
                          + (f"finished stages kept in {args.out} ({', '.join(kept)}); the same command continues from them"
                             if kept else "no stage had finished yet; the same command starts again")) from None
    return 0


def _run(args: argparse.Namespace) -> None:
    if args.experiment == "fig1":
        from alexnet_kit.train.experiments import fig1  # here, not at the top: it loads torch

        try:
            lrs = [float(v) for v in args.lrs.split(",")] if args.lrs else None
        except ValueError:
            raise AlexKitError(f"--lrs must be comma-separated numbers, got {args.lrs!r}") from None
        if lrs and any(not 0 < v < 10 for v in lrs):
            raise AlexKitError(f"--lrs must be positive and below 10, got {args.lrs!r}")
        fig1.run(args.out, args.size, seeds=args.seeds, max_epochs=args.epochs, device=args.device, lrs=lrs, init=args.init)
    elif args.experiment == "ablations":
        from alexnet_kit.train.experiments import ablations  # here, not at the top: it loads torch

        variants = [v.strip() for v in args.variants.split(",")] if args.variants else None
        bad = [v for v in variants or [] if v not in ablations.VARIANTS]
        if bad:
            raise AlexKitError(f"unknown variant(s) {', '.join(bad)}; choose from {', '.join(ablations.VARIANTS)}")
        ablations.run(args.out, args.size, seeds=args.seeds, epochs=args.epochs, variants=variants, device=args.device)
    elif args.experiment == "fig3":
        from alexnet_kit.train.experiments import fig3  # here, not at the top: it loads torch

        fig3.run(args.out, _model(args), args.size)
    else:
        from alexnet_kit.train.experiments import fig4  # here, not at the top: it loads torch

        fig4.run(args.out, _model(args), args.size, queries=args.queries, neighbours=args.neighbours)


def _model(args: argparse.Namespace):
    """--model as every command takes it (a path or a pretrained name); None keeps the figures' own default."""
    return resolve_model(args.model) if args.model else None
