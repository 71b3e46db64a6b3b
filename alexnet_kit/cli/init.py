"""``alexnet-kit init``: a freshly initialised checkpoint (the paper's init, §5)."""
from __future__ import annotations

import argparse
from pathlib import Path

from .. import __version__
from ..config import AlexNetConfig, add_options, given_options
from ..errors import AlexKitError, FileProblem

# The AlexNetConfig fields `init` offers as options (help, choices and defaults come from the fields).
NETWORK_OPTIONS = ("init", "lrn_convention")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "init",
        help="create a checkpoint with freshly initialised (untrained) weights",
        description="Create a checkpoint of the paper's network with freshly initialised weights "
        "(§5: N(0, 0.01), biases 1 in conv2/4/5 and fc6/fc7). Classify works with it at once and "
        "says plainly that the weights are untrained.",
    )
    p.add_argument("out", help="where to write it (.safetensors); use it with --model OUT, or make it the default "
                   "with ALEXNET_KIT_MODEL=OUT or model = \"OUT\" in ~/.config/alexnet-kit/config.toml")
    p.add_argument("--classes", default="imagenet", help="'imagenet' (the 1000 ILSVRC-2012 classes, shipped) or a file: 'wnid<TAB>name' or one name per line")
    p.add_argument("--caffe-mean", metavar="NPY", help="mean image from Caffe's ilsvrc_2012_mean.npy (BGR, 3x256x256); default: ImageNet's per-channel mean")
    add_options(p, AlexNetConfig, only=NETWORK_OPTIONS, show_defaults=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--force", action="store_true", help="overwrite an existing file")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import numpy as np  # here, not at the top: the CLI starts without numpy and torch
    import torch

    from ..checkpoint import save_checkpoint
    from ..meta import ModelMeta, imagenet_classes, read_class_file
    from ..model import AlexNet, count_parameters
    from ..preprocess import Preprocess, caffe_mean_to_rgb

    out = Path(args.out)
    if out.exists() and not args.force:
        raise AlexKitError(f"{out}: already exists (use --force to overwrite)")
    if args.classes == "imagenet":
        wnids, names = imagenet_classes()
    else:
        try:
            wnids, names = read_class_file(args.classes)
        except (OSError, UnicodeDecodeError) as e:
            raise FileProblem(args.classes, f"cannot read class names ({e.strerror or e})") from None
        if not names:
            raise FileProblem(args.classes, "no class names in file")
    pre = Preprocess()
    if args.caffe_mean:
        try:
            pre = Preprocess(mean=caffe_mean_to_rgb(np.load(args.caffe_mean, allow_pickle=False)))
        except (OSError, ValueError) as e:
            raise FileProblem(args.caffe_mean, f"not a (3, 256, 256) mean image ({e})") from None
    config = AlexNetConfig(num_classes=len(names), **given_options(args, AlexNetConfig, only=NETWORK_OPTIONS))
    torch.manual_seed(args.seed)
    model = AlexNet(config)
    meta = ModelMeta(
        config, names, wnids, pre, trained=False,
        provenance={"created_by": f"alexnet-kit {__version__} init", "init": config.init, "seed": args.seed,
                    "mean": "caffe ilsvrc_2012_mean" if args.caffe_mean else "imagenet per-channel"},
    )
    digest = save_checkpoint(out, model, meta)
    print(f"wrote {out}: untrained AlexNet, {count_parameters(model):,} parameters, {len(names)} classes, fingerprint {digest[:12]}")
    return 0
