"""``alexnet-kit info``: what a checkpoint or artifact holds."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..engines import cpu
from ..engines.measurements import read_measurements, sidecar_path
from ..paths import config_file
from ..pretrained import NAMES, cached_checkpoint
from ..resolve import build_target, resolve_model
from ..settings import EXAMPLE_FOLDER, index_choice, model_choice, offline


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="show a model file's metadata, or which model and index are the defaults",
                       description="Show what a checkpoint (or exported artifact) holds: architecture, classes, "
                       "preprocessing, provenance, fingerprint. Without MODEL: which model and index the commands use "
                       "when given none, and why (--model/--index, $ALEXNET_KIT_MODEL/$ALEXNET_KIT_INDEX, "
                       "~/.config/alexnet-kit/config.toml, or built in), without downloading anything.")
    p.add_argument("model", nargs="?", help="checkpoint (.safetensors), artifact or pretrained name (default: describe the defaults)")
    p.add_argument("--json", action="store_true", help="print the metadata as JSON (without the mean image)")
    p.set_defaults(run=run)


def defaults(as_json: bool) -> int:
    """The default model and index and why, without fetching either."""
    m, i = model_choice(), index_choice()
    if m.value in NAMES and not Path(m.value).exists():
        from ..pretrained.registry import source  # defers torch (the registry's preprocessing loads it)

        ckpt = cached_checkpoint(m.value)
        src = source(m.value)
        state = (f"in the cache: {ckpt}" if ckpt.exists() else
                 f"not downloaded yet: the first command that needs it fetches {src.url} into {ckpt.parent}")
        model_line = f"{m.value}: {src.title}; {state}"
    else:
        model_line = m.value
    ipath = build_target(None)  # where the default index is (or will be)
    d = {"model": m.value, "model_from": m.why, "model_detail": model_line, "index": i.value, "index_from": i.why,
         "index_path": str(ipath), "index_exists": ipath.exists(), "offline": offline(), "config_file": str(config_file()),
         "config_file_exists": config_file().is_file()}
    not_built = "" if ipath.exists() else f"; not built yet: alexnet-kit index build {EXAMPLE_FOLDER}"
    rows = {"default model": f"{model_line} ({m.why})", "default index": f"{ipath} ({i.why}){not_built}",
            "downloads": "off (offline mode)" if d["offline"] else "on",
            "config file": f"{config_file()}{'' if d['config_file_exists'] else ' (none)'}"}
    print(json.dumps(d, indent=2) if as_json else "\n".join(f"{k:<14} {v}" for k, v in rows.items()))
    return 0


def run(args: argparse.Namespace) -> int:
    if args.model is None:
        return defaults(args.json)

    import torch  # defers torch (the parser, and 'info' without a model, must not load it)

    from ..engines import load_engine  # defers torch
    from ..engines.gate import describe_measurements  # defers torch
    from ..model import AlexNet, count_parameters  # defers torch

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
