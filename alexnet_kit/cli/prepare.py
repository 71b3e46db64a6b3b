"""``alexnet-kit prepare SRC DST``: photo folders -> packed 256x256 training data."""
from __future__ import annotations

import argparse

from alexnet_kit.interrupt import StopOnSignal


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "prepare",
        help="pack photo folders for training (256x256 uint8, mean image, RGB PCA)",
        description="Decode every photo once as the paper does (§2: short side 256, centre 256x256 crop), "
        "pack them into memory-mapped uint8 arrays, and compute the training split's mean image and "
        "RGB PCA (§4.1). SRC is SRC/train/<class>/* and SRC/val/<class>/* (ImageNet layout), or "
        "SRC/<class>/* with a held-out fraction per class. Parallel and resumable: SIGTERM or Ctrl-C records "
        "every photo done so far and exits with status 128 + the signal (143, 130); run the same command "
        "again to continue. Unreadable photos are skipped and listed in DST/report.txt.",
    )
    p.add_argument("src", help="photo tree: SRC/train/<class>/*, SRC/val/<class>/*, or SRC/<class>/*")
    p.add_argument("dst", help="output folder (created; a partial one is resumed)")
    p.add_argument("--val-fraction", type=float, default=None,
                   help="hold out this fraction of each class for validation (fixed seed); default 0.2 when SRC has no val/ folder")
    p.add_argument("--seed", type=int, default=0, help="seed of the per-class validation split")
    p.add_argument("--classes", help="comma-separated class folders to keep (default: all)")
    p.add_argument("--size", type=int, default=256, help="side of the stored square photos (the paper: 256)")
    p.add_argument("--workers", type=int, default=0, help="decoding processes (default: all cores)")
    p.add_argument("--force", action="store_true", help="start over even if DST holds a preparation with other settings")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from alexnet_kit.train.prepare import prepare  # here, not at the top: packing loads numpy; the CLI starts without it

    with StopOnSignal("recording the photos packed so far") as stop:
        rep = prepare(args.src, args.dst, size=args.size, val_fraction=args.val_fraction, seed=args.seed,
                      workers=args.workers or None, progress=not args.quiet, force=args.force,
                      classes=[c.strip() for c in args.classes.split(",") if c.strip()] if args.classes else None,
                      stop=stop)
    skipped = sum(rep["skipped"].values())
    print(f"packed {rep['packed']['train']} training and {rep['packed']['val']} validation photos of "
          f"{rep['classes']} classes into {args.dst} ({rep['layout']}); "
          f"skipped {skipped} unreadable file(s){' listed in ' + args.dst + '/report.txt' if skipped else ''}")
    return 0
