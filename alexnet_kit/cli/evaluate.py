"""``alexnet-kit evaluate CHECKPOINT... --data DIR``: top-1/top-5 error, 1 or 10 crops, ensembles."""
from __future__ import annotations

import argparse
import json

from ..resolve import resolve_model


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="top-1/top-5 error of one checkpoint or an ensemble (1 or 10 crops)",
        description="Top-1 and top-5 error on labelled photos. With 10 crops each photo's softmax is "
        "averaged over the four corners, the centre and their mirrors (§4.1); several checkpoints are "
        "an ensemble: their softmaxes are averaged (§6). DIR is a prepared folder (its validation "
        "split) or a folder of class subfolders.",
    )
    p.add_argument("checkpoints", nargs="+", metavar="CHECKPOINT", help="model.safetensors file(s)")
    p.add_argument("--data", required=True, help="prepared folder, or photo folder <class>/<photo>")
    p.add_argument("--crops", type=int, choices=[1, 10], default=10)
    p.add_argument("--split", default="val", choices=["val", "train"], help="split of a prepared folder (default val)")
    p.add_argument("--batch", type=int, default=16, help="photos per batch")
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from alexnet_kit.train.evaluate import evaluate  # defers the training stage (torch) to this command

    res = evaluate([resolve_model(c) for c in args.checkpoints], args.data, crops=args.crops, batch=args.batch, device=args.device,
                   split=args.split, progress=not args.quiet)
    if args.json:
        print(json.dumps(res.to_dict(), indent=1))
        return 0
    what = f"ensemble of {len(res.models)} models" if len(res.models) > 1 else res.models[0]
    print(f"{what}: {res.photos} photos, {res.crops} crop{'s' if res.crops > 1 else ''}: "
          f"top-1 error {100 * res.top1_err:.2f}%, top-5 error {100 * res.top5_err:.2f}%"
          + (f" ({len(res.skipped)} unreadable photo(s) skipped)" if res.skipped else ""))
    return 0
