"""``alexnet-kit pretrained caffe|torchvision|onnx-zoo``: published weights as a checkpoint."""
from __future__ import annotations

import argparse
import time

from ..pretrained import NAMES, cached_checkpoint, convert, ensure, fetch


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "pretrained",
        help="download or convert published AlexNet weights (Caffe, torchvision, ONNX zoo)",
        description="Turn published ImageNet weights into an alexnet-kit checkpoint. Without --file the "
        "official file is downloaded into the cache (progress bar, resumed if interrupted, digest checked). "
        "caffe: BVLC bvlc_alexnet, the paper's grouped network (227 crops, LRN across all maps); "
        "torchvision: IMAGENET1K_V1, the 2014 single-tower variant; onnx-zoo: bvlcalexnet-12 (Caffe's "
        "weights via ONNX). Afterwards '--model NAME' works in every command.",
    )
    p.add_argument("name", choices=NAMES, help="which published weights")
    p.add_argument("--file", metavar="PATH", help="convert this file instead of downloading it")
    p.add_argument("--out", metavar="PATH", help="checkpoint to write (default: the cache, where '--model NAME' finds it)")
    p.add_argument("--no-digest-check", action="store_true",
                   help="convert a file whose digest differs from the published one (the checkpoint's provenance says so)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..pretrained.registry import source  # here, not at the top: the registry loads torch

    src = source(args.name)
    start = time.perf_counter()
    if not args.file and not args.out and not args.no_digest_check:
        had = cached_checkpoint(args.name).exists()
        path = ensure(args.name, progress=not args.quiet)  # what '--model NAME' does: one code path, one lock
        verb = "already in the cache:" if had else "wrote"
    else:
        file = args.file or fetch(args.name, progress=not args.quiet)
        path = convert(args.name, file, args.out or cached_checkpoint(args.name),
                       digest_check=not args.no_digest_check, src=src)
        verb = "wrote"
    acc = src.accuracy
    print(f"{verb} {path} ({args.name}: {src.title}; {time.perf_counter() - start:.1f} s)")
    print(f"published accuracy (not re-measured): top-1 {acc['top1']}%, top-5 {acc['top5']}%, {acc['crops']} crop, {acc['split']}")
    if args.no_digest_check:
        print("digest not checked: the checkpoint's provenance records it")
    return 0
