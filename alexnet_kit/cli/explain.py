"""``alexnet-kit explain``: which pixels of a photo drive a class, or its similarity to another photo."""
from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

from ..errors import AlexKitError
from ..resolve import resolve_model
from . import _serving
from ._photos import named_photos

METHOD_NAMES = ("occlusion", "gradcam", "guided-gradcam", "deconvnet", "integrated-gradients")
DEFAULT_METHOD = "integrated-gradients"  # alexnet_kit.explain.DEFAULT_METHOD, without importing torch for --help


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "explain",
        help="heat maps of what drives a class or a similarity (occlusion, Grad-CAM, ...)",
        description="For each photo, a heat map over the network's central 224x224 crop of the pixels that drive "
        "a class (the most probable, --top K of them, or --class NAME) or, with --similar-to, the cosine of its fc7 "
        "vector to another photo's (§6.1). Writes per map OUT/STEM.png (the crop and the overlay, with the class "
        "and probability), STEM.npy (the raw map at the crop's resolution) and STEM.json (the crop's place in the "
        "photo and the method's settings). occlusion runs on every engine and file (forward passes only); the "
        "gradient methods need a checkpoint (.safetensors). See docs/explain.md for what each method shows.",
    )
    p.add_argument("photos", nargs="+", metavar="PHOTO", help="image files, or folders (searched recursively)")
    p.add_argument("-m", "--model", help=_serving.MODEL_HELP)
    p.add_argument("--method", choices=METHOD_NAMES, default=DEFAULT_METHOD,
                   help=f"how the map is made (default {DEFAULT_METHOD}: the most faithful under 2 s a photo, "
                   "docs/benchmarks.md)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--class", dest="classes", action="append", metavar="NAME",
                       help="explain this class (a name or a unique part of one; repeat for several)")
    which.add_argument("-k", "--top", type=int, default=1, help="explain the K most probable classes (default 1)")
    which.add_argument("--similar-to", metavar="OTHER", help="explain what makes each photo similar to OTHER (fc7 cosine)")
    p.add_argument("-o", "--out", default="explanations", metavar="DIR", help="output folder (default ./explanations)")
    p.add_argument("--window", type=int, default=32, help="occlusion: the grey patch's side in crop pixels (default 32)")
    p.add_argument("--stride", type=int, default=16, help="occlusion: the patch's step in pixels (default 16)")
    p.add_argument("--steps", type=int, default=16, help="integrated-gradients: steps of the path integral (default 16)")
    p.add_argument("--device", default="cpu", help="torch device for checkpoints, e.g. cuda (default cpu)")
    _serving.add_options(p)
    p.set_defaults(run=run)


def _check(args) -> None:
    if args.top < 1:
        raise AlexKitError("--top must be at least 1")
    if args.window < 1 or args.stride < 1:
        raise AlexKitError("--window and --stride must be at least 1")
    if args.steps < 2:
        raise AlexKitError("--steps must be at least 2")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise AlexKitError(f"{out}: exists and is not a folder")


def stems(photos: list[str]) -> dict[str, str]:
    """A file-name stem per photo: its name, with its folder's in front where two photos share a name."""
    from ..explain.drawing import safe_stem  # defers numpy and Pillow

    count = Counter(Path(p).stem for p in photos)
    return {p: safe_stem(Path(p).stem if count[Path(p).stem] == 1 else f"{Path(p).parent.name}-{Path(p).stem}")
            for p in photos}


def run(args: argparse.Namespace) -> int:
    from ..explain import Explainer, require_captum  # defers torch (the parser must not load it)
    from ..explain.explainer import check_method  # defers torch
    from ..explain.drawing import safe_stem, write  # defers numpy and Pillow
    from ..errors import ImageError

    require_captum()
    _check(args)
    photos, problems = named_photos(args.photos)
    if not photos:
        return 1
    if args.similar_to and not Path(args.similar_to).is_file():
        raise AlexKitError(f"{args.similar_to}: file not found")
    model = resolve_model(args.model)
    check_method(model, args.method)  # before an engine is chosen and measured
    explainer = Explainer(_serving.open_selected(args, model, batch=64), args.method, window=args.window,
                          stride=args.stride, ig_steps=args.steps)
    out, names, failures, written = Path(args.out), stems(photos), 0, 0
    for photo in photos:
        try:
            if args.similar_to:
                found = [explainer.explain_similar(photo, args.similar_to, other_name=Path(args.similar_to).name)]
                tags = [f"similar-{safe_stem(Path(args.similar_to).stem)}"]
            else:
                found = explainer.explain(photo, args.classes, args.top)
                tags = [safe_stem(e.label) for e in found]
        except ImageError as e:
            failures += 1
            print(f"alexnet-kit: error: {e}", file=sys.stderr)
            continue
        for e, tag in zip(found, tags):
            png = write(e, out, f"{names[photo]}.{args.method}.{tag}")
            written += 1
            print(f"{photo}: {e.caption()} -> {png}")
    print(f"wrote {written} map(s) to {out}/ (PNG overlay, .npy map, .json geometry each)", file=sys.stderr)
    if failures:
        print(f"alexnet-kit: {failures} of {len(photos)} photos could not be read", file=sys.stderr)
    return 1 if failures or problems else 0
