"""``alexnet-kit features``: the features of many photos, to .npz or Parquet (§6.1)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import AlexKitError
from ..named_layers import LAYER_NAMES, SPATIAL, parse_layers
from ..resolve import resolve_model
from . import _serving
from ._photos import named_photos


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "features",
        help="export the features of photos (fc7, or any named layer: conv1_pre ... fc8) to .npz or Parquet",
        description="Run the network over PHOTOS (folders are searched recursively) and write one vector per "
        "photo with its path and the model's fingerprint to OUT (.npz, or .parquet where pyarrow is installed). "
        "The same extraction as 'index build'. --layer names any layer (see 'alexnet-kit info MODEL --layers' "
        "for their shapes), or several, computed in one pass and written side by side; every layer but fc7 and "
        "fc8 needs a checkpoint (.safetensors): exported artifacts compute those two only. Unreadable photos are "
        "skipped and listed. An interrupted run resumes when run again (the photos done so far wait in OUT.partial/).",
    )
    p.add_argument("photos", nargs="+", metavar="PHOTOS", help="folders or image files")
    p.add_argument("-o", "--out", required=True, metavar="FILE", help="output file: .npz or .parquet")
    p.add_argument("-m", "--model", help=_serving.MODEL_HELP)
    p.add_argument("--layer", default="fc7", metavar="NAME[,NAME...]",
                   help="one layer or a comma list, e.g. conv5,fc7 (default fc7, after its ReLU: §6.1); "
                   f"one of {', '.join(LAYER_NAMES)}: convN/fcN after their ReLU (§3.1), *_pre before it, normN "
                   "after response normalisation (§3.3), poolN after max-pooling (§3.4), fc8 the logits")
    p.add_argument("--spatial", choices=SPATIAL, default="flatten",
                   help="how a map layer (conv*, norm*, pool*) becomes columns: flatten keeps all CxHxW values "
                   "(default), max or mean one per map over its positions; vectors (fc*) are unaffected")
    p.add_argument("--crops", type=int, choices=[1, 10], default=1,
                   help="1: centre crop (default); 10: mean over the ten crops of §4.1")
    p.add_argument("--normalise", action="store_true", help="L2-normalise each vector (default: raw activations)")
    p.add_argument("--batch", type=int, help="photos per forward pass (default: 64 crops' worth)")
    p.add_argument("--chunk", type=int, default=256, help="photos per saved chunk: the most an interruption loses (default 256)")
    p.add_argument("--force", action="store_true", help="replace FILE if it exists")
    p.add_argument("--device", default="cpu", help="torch device for checkpoints, e.g. cuda (default cpu)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    _serving.add_options(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    layers = parse_layers(args.layer)  # an unknown layer: one line, before anything is read or loaded

    from ..engines.errors import require_layers  # defers the engines package
    from ..engines.loaders import feature_layers_of  # defers torch (the parser must not load it)
    from ..features import FeatureExtractor, default_batch_photos  # defers torch
    from ..features_file import check_output, export_features  # defers torch, through features

    if args.batch is not None and args.batch < 1:
        raise AlexKitError("--batch must be at least 1")
    if args.chunk < 1:
        raise AlexKitError("--chunk must be at least 1")
    check_output(Path(args.out), args.force)  # before the photos are walked and the model is loaded
    photos, empty = named_photos(args.photos, walk=True)
    if not photos:
        return 1
    model = resolve_model(args.model)
    batch_photos = args.batch or default_batch_photos(args.crops)
    require_layers(model, layers, feature_layers_of(model))  # a layer an artifact lacks: one line, before opening it
    engine = _serving.open_selected(args, model, batch=batch_photos * args.crops)
    extractor = FeatureExtractor(engine, crops=args.crops, metric="cosine" if args.normalise else "euclidean",
                                 batch_photos=batch_photos, layer=layers, spatial=args.spatial)
    report = export_features(photos, args.out, extractor, model=str(engine.selection.path), chunk=args.chunk,
                             progress=not args.quiet, force=args.force)
    for path, err in report.errors[:20]:
        print(f"alexnet-kit: skipped: {err if err.startswith(path) else f'{path}: {err}'}", file=sys.stderr)
    if len(report.errors) > 20:
        print(f"alexnet-kit: ... and {len(report.errors) - 20} more unreadable photos", file=sys.stderr)
    resumed = f", {report.resumed} from the interrupted run" if report.resumed else ""
    print(f"wrote {args.out}: {report.written} vectors of {report.dim} ({extractor.settings.describe()}){resumed}, "
          f"{len(report.errors)} unreadable skipped; model {extractor.fingerprint[:16]}")
    return 1 if report.errors or empty else 0
