"""``alexnet-kit info``: what a checkpoint or artifact holds."""
from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="show a model file's metadata", description="Show what a checkpoint (or exported artifact) holds: architecture, classes, preprocessing, provenance, fingerprint.")
    p.add_argument("model", help="checkpoint (.safetensors) or artifact")
    p.add_argument("--json", action="store_true", help="print the metadata as JSON (without the mean image)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import json

    from ..engines import load_engine
    from ..model import AlexNet, count_parameters

    import torch

    from ..paths import resolve_model

    from ..engines import cpu
    from ..engines.select import describe_measurements, read_measurements, sidecar_path

    path = resolve_model(args.model)
    engine = load_engine(path)
    meta = engine.meta
    d = meta.to_dict()
    d["preprocess"].pop("mean_f32le_b64")
    d["fingerprint"] = engine.fingerprint
    d["engine"] = engine.description
    with torch.device("meta"):
        d["parameters"] = count_parameters(AlexNet(meta.config))
    d["machine"] = cpu.machine_class()
    d["serving_measurements"] = read_measurements(path)
    if args.json:
        print(json.dumps(d, indent=2))
        return 0
    cfg = meta.config
    print(f"file         {args.model}")
    print(f"engine       {engine.description}")
    print(f"weights      {'trained' if meta.trained else 'UNTRAINED (freshly initialised)'}; fingerprint {engine.fingerprint[:16]}")
    print(f"network      AlexNet, {d['parameters']:,} parameters, {cfg.towers} tower(s), {cfg.activation}, "
          f"LRN {'off' if not cfg.lrn else cfg.lrn_convention + ' convention'}, pooling {'3/2 overlapping' if cfg.overlapping_pool else '2/2'}, dropout {cfg.dropout}")
    print(f"input        {meta.preprocess.crop}x{meta.preprocess.crop} crops of {meta.preprocess.resize}x{meta.preprocess.resize}, mean {'image' if meta.preprocess.mean.ndim == 3 else 'per channel'}")
    names = ", ".join(meta.classes[:3]) + (", ..." if len(meta.classes) > 3 else "")
    print(f"classes      {len(meta.classes)}: {names}")
    for k, v in sorted(meta.provenance.items()):
        print(f"{k:<12} {v}")
    print(f"this CPU     {cpu.describe()}; native bf16: {'yes' if cpu.native_bf16() else 'no'}")
    lines = describe_measurements(path)
    if not lines:
        print(f"serving      not measured yet (the first 'classify' with --engine/--precision auto measures and stores it in "
              f"{sidecar_path(path).name})")
    for line in lines:
        print(f"serving      {line}")
    return 0
