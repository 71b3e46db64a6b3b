"""``alexnet-kit units``: the photos of an index that most excite a unit, cut to its receptive field."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..errors import AlexKitError
from ..resolve import resolve_index, resolve_model
from ..settings import EXAMPLE_FOLDER

LAYERS = ("conv1", "norm1", "pool1", "conv2", "norm2", "pool2", "conv3", "conv4", "conv5", "pool5", "fc6", "fc7", "fc8")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "units",
        help="the photos of an index that most excite a unit (Zeiler & Fergus, Figure 2)",
        description="Find the photos of INDEX whose central crop most excites one unit of a layer (a map of a "
        "convolutional layer, its maximum over positions; a neuron of fc6/fc7/fc8) and cut each to the unit's "
        "receptive field where it fired. Writes a contact sheet OUT.png and OUT.json. The first call for a layer "
        "computes every unit's maximum for every photo in one batched pass and stores it in INDEX/units/ "
        "(resumable; 'index add' extends it), so later calls take a moment.",
    )
    p.add_argument("index", nargs="?", help="index folder or name (default: the default index)")
    p.add_argument("--layer", default="conv5", help=f"the layer (default conv5): {', '.join(LAYERS)}")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--unit", type=int, help="the unit's number (a map of a convolutional layer, from 0)")
    which.add_argument("--units", choices=["all"], help="all: a grid over every unit of the layer")
    p.add_argument("-k", "--top", type=int, default=9, help="photos per unit (default 9)")
    p.add_argument("-m", "--model", help="checkpoint whose units are shown (default: the index's model, or the "
                   ".safetensors beside its exported artifact)")
    p.add_argument("-o", "--out", metavar="FILE", help="the sheet, .png (default units-LAYER-UNIT.png); "
                   "its JSON is written beside it")
    p.add_argument("--deconv", action="store_true", help="beside each patch, the unit's deconvnet projection "
                   "(Zeiler & Fergus; one backward pass a photo)")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cuda (default cpu)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=run)


def units_model(args, index_model: Path) -> Path:
    """The checkpoint for the units: --model, else the index's model or the checkpoint it was exported from."""
    from ..explain.units import checkpoint_for  # defers torch

    if args.model:
        return resolve_model(args.model)
    found = checkpoint_for(index_model)
    if found is None:
        raise AlexKitError(f"the index's model {index_model} is not a checkpoint and no .safetensors lies beside it: "
                           "units need the maps a checkpoint computes; name one with --model")
    return found


def run(args: argparse.Namespace) -> int:
    from ..engines import load_engine  # defers torch (the parser must not load it)
    from ..explain import contact_sheet as sheets  # defers torch
    from ..explain.units import UnitTable  # defers torch
    from ..search import SimilarityIndex  # defers torch

    if args.top < 1:
        raise AlexKitError("--top must be at least 1")
    if args.layer not in LAYERS:
        raise AlexKitError(f"unknown layer {args.layer!r}: units are shown for {', '.join(LAYERS)}")
    index = resolve_index(args.index)
    if not index.exists():
        raise AlexKitError(f"{index}: no index there: alexnet-kit index build {EXAMPLE_FOLDER}")
    out = Path(args.out or f"units-{args.layer}-{args.unit if args.units is None else 'all'}.png")
    if out.suffix.lower() != ".png":
        raise AlexKitError(f"{out}: the sheet is a .png")
    with SimilarityIndex.open(index) as idx:
        model = units_model(args, idx.model_path)
        engine = load_engine(model, device=args.device)
        table = UnitTable.of(index, engine, args.layer, model)
        if args.unit is not None and not 0 <= args.unit < table.units:
            raise AlexKitError(f"{args.layer} has units 0 to {table.units - 1}, not {args.unit}")
        if args.deconv and args.layer in ("fc6", "fc7", "fc8"):
            raise AlexKitError("--deconv projects a map's unit; fc6, fc7 and fc8 have no map")
        added = table.update(idx.store, progress=not args.quiet)
        if added:
            print(f"stored the {args.layer} units of {added} photos in {table.folder}", file=sys.stderr)
        units = range(table.units) if args.units else [args.unit]
        tops = {u: table.top(idx.store, u, args.top) for u in units}
    if not any(tops.values()):
        raise AlexKitError(f"{index}: no readable photos")
    name = model.name
    if args.units:
        sheet = sheets.layer_sheet(tops, engine.meta, f"{name}: {args.layer}, top {args.top} photos of each of {table.units} units")
    else:
        projections = _projections(engine, args, tops[args.unit]) if args.deconv else None
        sheet = sheets.unit_sheet(tops[args.unit], engine.meta, f"{name}: {args.layer} unit {args.unit}, top {args.top}",
                                  projections=projections)
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out)
    doc = {"index": str(index), "model": str(model), "fingerprint": engine.fingerprint, "layer": args.layer,
           "activation": "maximum over the map on the central crop" if args.layer not in ("fc6", "fc7", "fc8") else "the neuron's value",
           "units": {str(u): [{"path": t.path, "activation": t.activation, "location": t.location,
                               "box_in_crop": t.box} for t in ts] for u, ts in tops.items()}}
    out.with_suffix(".json").write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {out} and {out.with_suffix('.json')}")
    return 0


def _projections(engine, args, tops):
    from ..explain.contact_sheet import deconv_projection  # defers captum
    from ..explain import require_captum
    from ..explain.methods import gradient_model

    require_captum()
    model = gradient_model(engine.model)
    return [deconv_projection(model, args.layer, t, args.unit, engine.meta) for t in tops]
