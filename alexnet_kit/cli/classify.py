"""``alexnet-kit classify``: top-k labels, ten crops averaged (§4.1)."""
from __future__ import annotations

import argparse
import json
import sys

from tqdm import tqdm

from ..errors import AlexKitError
from ..resolve import resolve_model
from . import _serving
from ._photos import named_photos


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "classify",
        help="classify photos (ten-crop, averaged softmax)",
        description="Classify photos as the paper tests (§4.1): the softmax averaged over ten 224x224 crops "
        "(four corners, centre, and their mirrors). Unreadable photos are reported one line each on "
        "stderr; the others are still classified, and the exit status is then 1.",
    )
    p.add_argument("photos", nargs="+", metavar="PHOTO", help="image files, or folders (searched recursively)")
    p.add_argument("-m", "--model", help=_serving.MODEL_HELP)
    p.add_argument("-k", "--top", type=int, default=5, help="labels per photo (default 5)")
    p.add_argument("--crops", type=int, choices=[1, 10], default=10, help="10: corners + centre + mirrors (the paper); 1: centre crop")
    p.add_argument("--json", action="store_true", help="one JSON document with every result")
    p.add_argument("--batch", type=int, default=8, help="photos per forward pass (default 8, i.e. 80 crops)")
    p.add_argument("--device", default="cpu", help="torch device for checkpoints, e.g. cuda (default cpu)")
    _serving.add_options(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..classify import Classifier  # defers torch (the parser must not load it)

    if args.top < 1:
        raise AlexKitError("--top must be at least 1")
    if args.batch < 1:
        raise AlexKitError("--batch must be at least 1")
    photos, empty = named_photos(args.photos)
    if not photos:
        return 1
    model = resolve_model(args.model)
    clf = Classifier(_serving.open_selected(args, model, batch=args.batch * args.crops), crops=args.crops,
                     batch_photos=args.batch)
    if not clf.trained:
        print(f"warning: {model} holds untrained (freshly initialised) weights: the labels are meaningless "
              "until the model is trained or trained weights are imported", file=sys.stderr)
    failures = 0
    results = []
    # A bar with rate and ETA on a terminal only (disable=None), for long folders.
    bar = tqdm(total=len(photos), unit="photo", file=sys.stderr, disable=None if len(photos) > args.batch else True)
    for r in clf.classify(photos, top=args.top):
        bar.update(1)
        if not r.ok:
            failures += 1
            bar.write(f"alexnet-kit: error: {r.error}", file=sys.stderr)
        if args.json:
            results.append(r.to_dict())
        elif r.ok:
            lines = [r.name] + [f"  {100 * l.probability:6.2f}%  {l.name}" for l in r.labels]
            bar.write("\n".join(lines), file=sys.stdout)
            sys.stdout.flush()
    bar.close()
    if args.json:
        doc = {"model": str(model), "trained": clf.trained, "crops": args.crops, "engine": clf.engine.description,
               "precision": clf.engine.precision, "choice": clf.selection.reason, "results": results}
        print(json.dumps(doc, indent=2))
    if failures:
        print(f"alexnet-kit: {failures} of {len(photos)} photos could not be read", file=sys.stderr)
    return 1 if failures or empty else 0
