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
    p.add_argument("--json", action="store_true", help="print the metadata (or, with --layers, the layers) as JSON "
                   "(without the mean image)")
    p.add_argument("--layers", action="store_true",
                   help="list the named layers 'features --layer' takes (conv1_pre ... fc8): each one's shape per image, "
                   "its columns under --spatial flatten and max/mean, a map's receptive field, and which ones this "
                   "file computes (an exported artifact: fc7 and fc8; the rest need the checkpoint); without MODEL, "
                   "those of the default model")
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


def layer_rows(config, have: tuple[str, ...]) -> list[dict]:
    """One dict per named layer: shape per image, columns under each --spatial, receptive field, computed here."""
    from ..named_layers import MAP_LAYERS, feature_size, layer_shapes, receptive_field  # the parser needs none of it

    rows = []
    for name, shape in layer_shapes(config).items():
        rf = receptive_field(config, name) if name in MAP_LAYERS else None
        rows.append({"name": name, "shape": list(shape),
                     "columns": {s: feature_size(shape, s) for s in ("flatten", "max", "mean")},
                     "receptive_field": None if rf is None else {"size": rf.size, "stride": rf.jump, "start": rf.start},
                     "computed_here": name in have})
    return rows


def layers(given: str, engine, as_json: bool) -> int:
    """``info MODEL --layers``: the named layers of the model's network, and which this file computes."""
    rows = layer_rows(engine.meta.config, engine.feature_layers)
    need = [r["name"] for r in rows if not r["computed_here"]]
    if as_json:
        print(json.dumps({"model": given, "engine": engine.description, "computes": list(engine.feature_layers),
                          "need_checkpoint": need, "layers": rows}, indent=2))
        return 0
    print(f"{'layer':<10} {'shape per image':<16} {'flatten':>9} {'max/mean':>9}  {'receptive field':<16} computed here")
    for r in rows:
        rf = r["receptive_field"]
        field = f"{rf['size']}x{rf['size']} /{rf['stride']}" if rf else "-"
        print(f"{r['name']:<10} {'x'.join(map(str, r['shape'])):<16} {r['columns']['flatten']:>9,} "
              f"{r['columns']['max']:>9,}  {field:<16} {'yes' if r['computed_here'] else 'needs the checkpoint'}")
    print("columns: a row's values per layer under 'features --spatial flatten' and under max or mean (one per map); "
          "receptive field: input pixels one unit of a map sees, and its stride")
    if need:
        print(f"{given}: this exported file computes {', '.join(engine.feature_layers)} only (its features and logits "
              f"outputs); the other {len(need)} layers need the checkpoint (.safetensors)")
    return 0


def run(args: argparse.Namespace) -> int:
    if args.model is None and not args.layers:
        return defaults(args.json)

    import torch  # defers torch (the parser, and 'info' without a model, must not load it)

    from ..engines import load_engine  # defers torch
    from ..engines.gate import describe_measurements  # defers torch
    from ..model import AlexNet, count_parameters  # defers torch

    path = resolve_model(args.model)
    engine = load_engine(path)
    if args.layers:
        return layers(args.model or str(path), engine, args.json)
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
