"""The --model, --engine and --precision options shared by classify, features, index build and the demo."""
from __future__ import annotations

import argparse

MODEL_HELP = ("checkpoint, exported artifact or pretrained name (caffe, torchvision, onnx-zoo); default: "
              "$ALEXNET_KIT_MODEL, else model in ~/.config/alexnet-kit/config.toml, else caffe (BVLC's bvlc_alexnet, "
              "the paper's network, downloaded once on first use)")
ENGINE_HELP = ("onnxruntime, openvino (.onnx artifacts), torch (checkpoints, .ts, .pt2), or auto (default): the "
               "fastest that passes the precision gate on this CPU, measured once and stored beside the model")
PRECISION_HELP = ("fp32, bf16 (only on a CPU with amx_bf16 or avx512_bf16), int8 (the int8 export beside an .onnx), "
                  "or auto (default): the fastest whose top-1 agreement with fp32 on real photos is >= 99.5%% "
                  "and fc7 cosine >= 0.999")


def add_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--engine", default="auto", choices=["auto", "onnxruntime", "openvino", "torch"], help=ENGINE_HELP)
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "int8"], help=PRECISION_HELP)


def open_engine(args: argparse.Namespace, model, batch: int, quiet: bool = False):
    """The engine for ``model`` as the options ask; says on stderr which one runs (unless ``quiet``)."""
    from ..engines.select import open_engine as choose, stderr_log

    engine = choose(model, args.engine, args.precision, device=getattr(args, "device", "cpu"), batch=batch,
                    log=None if quiet else stderr_log)
    if not quiet:
        stderr_log(f"engine: {engine.choice}")
    return engine
