"""The --model, --engine and --precision options shared by classify, features, index build and the demo."""
from __future__ import annotations

import argparse

from typing import TYPE_CHECKING

from ..engines.messages import stderr_log
from ..engines.precision import SERVING_MIN_COSINE, SERVING_MIN_TOP1

if TYPE_CHECKING:
    from ..engines import Engine

MODEL_HELP = ("checkpoint, exported artifact or pretrained name (caffe, torchvision, onnx-zoo); default: "
              "$ALEXNET_KIT_MODEL, else model in ~/.config/alexnet-kit/config.toml, else caffe (BVLC's bvlc_alexnet, "
              "the paper's network, downloaded once on first use)")
ENGINE_HELP = ("onnxruntime, openvino (.onnx artifacts), torch (checkpoints, .ts, .pt2), or auto (default): the "
               "fastest that passes the precision gate on this CPU, measured once and stored beside the model")
PRECISION_HELP = ("fp32, bf16 (only on a CPU with amx_bf16 or avx512_bf16), int8 (the int8 export beside an .onnx), "
                  f"or auto (default): the fastest whose top-1 agreement with fp32 on real photos is >= "
                  f"{100 * SERVING_MIN_TOP1:.1f}%% and fc7 cosine >= {SERVING_MIN_COSINE}")


def add_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--engine", default="auto", choices=["auto", "onnxruntime", "openvino", "torch"], help=ENGINE_HELP)
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "int8"], help=PRECISION_HELP)


def open_selected(args: argparse.Namespace, model, batch: int, quiet: bool = False) -> "Engine":
    """The engine for ``model`` as the options ask: chosen (``auto`` measures once what is not measured
    yet), opened, and then said on stderr with the reason (unless ``quiet``); ``.selection`` is the choice."""
    from ..engines import choose  # defers torch: building the parser must not load it

    selection = choose(model, args.engine, args.precision, device=getattr(args, "device", "cpu"), batch=batch,
                       log=None if quiet else stderr_log)
    engine = selection.open()  # a file that cannot load fails here, before anything is said about it
    if not quiet:
        stderr_log(f"engine: {selection.reason}")
    return engine
