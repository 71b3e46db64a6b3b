"""``alexnet-kit similar``: the photos nearest to a photo in fc7 space (§6.1)."""
from __future__ import annotations

import argparse
import json

from ..errors import AlexKitError
from ..resolve import resolve_index, resolve_model


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "similar",
        help="find the photos most similar to a photo",
        description="The photos of an index nearest to PHOTO in fc7 feature space (§6.1), best first, with "
        "scores (cosine similarity, or minus the Euclidean distance for a --metric euclidean index). A photo "
        "that is itself in the index is left out of its own results.",
    )
    p.add_argument("photo", metavar="PHOTO")
    p.add_argument("-i", "--index", metavar="INDEX", help="index folder, or the name of one in ~/.local/share/alexnet-kit/indexes "
                   "(default: $ALEXNET_KIT_INDEX, else index in ~/.config/alexnet-kit/config.toml, else the one named "
                   "'default', which 'alexnet-kit index build PHOTOS' writes)")
    p.add_argument("-k", "--top", type=int, default=8, help="how many (default 8)")
    p.add_argument("--json", action="store_true", help="one JSON document")
    p.add_argument("--rerank", type=int, metavar="N", help="candidates of a compressed index re-ranked exactly with "
                   "the stored vectors (0: off; default: the index's, set by 'index build --rerank', else 100)")
    p.add_argument("-m", "--model", help="the index's model, if it moved (must be the same weights)")
    p.add_argument("--crops", type=int, choices=[1, 10], help="expected feature setting (refused if the index differs)")
    p.add_argument("--metric", choices=["cosine", "euclidean"], help="expected metric (refused if the index differs)")
    p.add_argument("--device", default="cpu")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..search import SimilarityIndex  # defers torch (the parser must not load it)

    if args.top < 1:
        raise AlexKitError("--top must be at least 1")
    if args.rerank is not None and args.rerank < 0:
        raise AlexKitError("--rerank must be 0 (off) or a number of candidates")
    index = resolve_index(args.index)
    model = resolve_model(args.model) if args.model else None  # a path or a pretrained name; default: the index's
    with SimilarityIndex.open(index, model=model, crops=args.crops, metric=args.metric, device=args.device) as idx:
        hits = idx.query(args.photo, top=args.top, rerank=args.rerank)
        info = idx.info()
    if args.json:
        print(json.dumps({"query": args.photo, "index": str(index), "metric": info["feature_settings"]["metric"],
                          "exact": info["exact"], "rerank": 0 if info["exact"] else info["rerank"] if args.rerank is None else args.rerank,
                          "hits": [h.to_dict() for h in hits]}, indent=2))
        return 0
    for h in hits:
        print(f"{h.score:10.6f}  {h.path}")
    return 0
