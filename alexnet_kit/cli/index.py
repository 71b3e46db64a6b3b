"""``alexnet-kit index build|add|remove|info``: a FAISS index of fc7 features (§6.1)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..errors import AlexKitError
from ..paths import index_root
from ..resolve import build_target, list_indexes, resolve_index, resolve_model
from ..settings import EXAMPLE_FOLDER, index_choice
from . import _serving
from ._photos import named_photos

INDEX_HELP = "index folder, or the name of one in ~/.local/share/alexnet-kit/indexes (default: the default index)"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "index",
        help="build and maintain a similarity index of photos",
        description="A similarity index: the fc7 features (§6.1) of every photo in a folder, in a FAISS index "
        "plus a SQLite store of paths, checksums and vectors. Exact search for small collections, compressed "
        "(PCA + IVF + 8-bit) past 20,000 photos. An interrupted build resumes when run again.",
    )
    isub = p.add_subparsers(dest="index_command", metavar="ACTION", required=True)

    b = isub.add_parser("build", help="index a folder of photos", description="Walk PHOTOS (folders are searched "
                        "recursively), extract fc7 features in batches and write the index folder OUT. Unreadable "
                        "photos are skipped and reported. Run it again after an interruption to resume.")
    b.add_argument("photos", nargs="+", metavar="PHOTOS", help="folders or image files")
    b.add_argument("-o", "--out", metavar="INDEX", help="index folder to create (default: the default index, "
                   "~/.local/share/alexnet-kit/indexes/default, which 'similar' and 'demo' open when given no --index; "
                   "$ALEXNET_KIT_INDEX or index in the config file name another)")
    b.add_argument("-m", "--model", help=_serving.MODEL_HELP)
    b.add_argument("--crops", type=int, choices=[1, 10], default=1,
                   help="1: centre crop (default, one pass per photo); 10: mean over the ten crops of §4.1 (mirror-invariant, 10x slower)")
    b.add_argument("--metric", choices=["cosine", "euclidean"], default="cosine",
                   help="cosine: L2-normalised features (default); euclidean: raw features, as the paper compares them")
    b.add_argument("--index-type", default="auto", metavar="TYPE",
                   help="auto (Flat up to 20,000 photos, else PCA to 256 dims + IVF + SQ8, re-ranked; 896 dims with --rerank 0), "
                   "flat, ivf, hnsw, or a FAISS factory string")
    b.add_argument("--force", action="store_true", help="replace an existing index in OUT")
    b.add_argument("--rerank", type=int, metavar="N", help="candidates a compressed index re-ranks exactly with the "
                   "stored vectors per query, stored as the index's default (0: off; default 100)")
    _memory_option(b)
    _common(b)
    _serving.add_options(b)

    a = isub.add_parser("add", help="take in new and changed photos", description="Extract features of photos "
                        "that are new or changed (size and mtime, then SHA-256) and skip the rest. Without PHOTOS, "
                        "rescans the folders the index was built from. Also finishes an interrupted add or remove.")
    a.add_argument("index", metavar="INDEX", help=INDEX_HELP.replace(" (default: the default index)", ""))
    a.add_argument("photos", nargs="*", metavar="PHOTOS", help="folders or image files (default: the index's folders)")
    a.add_argument("-m", "--model", help="the index's model, if it moved (must be the same weights)")
    a.add_argument("--rebuild", action="store_true", help="rebuild the FAISS index from the stored vectors (retrains a "
                   "compressed one); first moves an old index's vectors to float16 shards, drops dead rows, and "
                   "extracts again the photos of a damaged shard")
    _memory_option(a)
    _common(a)

    r = isub.add_parser("remove", help="forget photos", description="Remove photos from the index: the given files, "
                        "every photo under the given folders, and with --missing every photo whose file is gone.")
    r.add_argument("index", metavar="INDEX", help=INDEX_HELP.replace(" (default: the default index)", ""))
    r.add_argument("paths", nargs="*", metavar="PATH")
    r.add_argument("--missing", action="store_true", help="also remove photos whose file no longer exists")

    i = isub.add_parser("info", help="describe an index, or list the user's indexes", description="What an index holds: "
                        "photos, model, feature settings, index type, memory per photo; checks both files' integrity. "
                        "Without INDEX: the indexes in ~/.local/share/alexnet-kit/indexes and which one is the default.")
    i.add_argument("index", metavar="INDEX", nargs="?", help="index folder or name (default: list them)")
    i.add_argument("--json", action="store_true")
    i.add_argument("--errors", action="store_true", help="list the unreadable photos")
    p.set_defaults(run=run)


def _memory_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-memory", metavar="SIZE", help="memory the FAISS build may use, e.g. 4G (default: a quarter "
                   "of RAM); past it a compressed index keeps its inverted lists on disk, memory-mapped")


def _max_memory(args: argparse.Namespace) -> int | None:
    from ..search.capped import parse_size  # defers numpy

    if args.max_memory is None:
        return None
    try:
        return parse_size(args.max_memory)
    except ValueError as e:
        raise AlexKitError(f"--max-memory: {e}") from None


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="cpu", help="torch device for checkpoints, e.g. cuda (default cpu)")
    p.add_argument("--batch", type=int, help="photos per forward pass (default: 64 crops' worth)")
    p.add_argument("--chunk", type=int, default=256, help="photos per committed chunk: the most an interruption loses (default 256)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def _report(report, verb: str) -> None:
    for path, err in report.errors[:20]:
        print(f"alexnet-kit: skipped: {err if err.startswith(path) else f'{path}: {err}'}", file=sys.stderr)
    if len(report.errors) > 20:
        print(f"alexnet-kit: ... and {len(report.errors) - 20} more unreadable photos", file=sys.stderr)
    print(f"{verb}: {report.summary()}")


def run(args: argparse.Namespace) -> int:
    from ..search import builder  # defers torch (the parser must not load it)
    from ..search.index_settings import IndexSettings  # defers torch

    cmd = args.index_command
    if cmd == "build":
        from ..features import FeatureExtractor, default_batch_photos  # defers torch

        if args.batch is not None and args.batch < 1:
            raise AlexKitError("--batch must be at least 1")
        if args.rerank is not None and args.rerank < 0:
            raise AlexKitError("--rerank must be 0 (off) or a number of candidates")
        args.out = str(build_target(args.out))
        photos, empty = named_photos(args.photos, walk=True)
        if not photos:
            return 1
        model = resolve_model(args.model)
        batch_photos = args.batch or default_batch_photos(args.crops)
        before = None if args.force else IndexSettings.read(args.out)
        if args.precision == "auto" and before is not None:  # a resumed build goes on in its own precision
            args.precision = str(before.extraction_precision(args.out, args.device))
        engine = _serving.open_selected(args, model, batch=batch_photos * args.crops)
        extractor = FeatureExtractor(engine, crops=args.crops, metric=args.metric, batch_photos=batch_photos)
        try:
            # the index records the file that ran (the int8 export when int8 was chosen): queries and
            # 'index add' then compute the same features
            report = builder.build(args.photos, args.out, engine.selection.path, crops=args.crops, metric=args.metric,
                                   index_type=args.index_type, device=args.device, force=args.force, chunk=args.chunk,
                                   progress=not args.quiet, batch_photos=args.batch, extractor=extractor, walked=photos,
                                   max_memory=_max_memory(args), rerank=args.rerank)
        except ValueError as e:  # an index type FAISS does not know
            raise AlexKitError(str(e)) from None
        _report(report, ("resumed and built " if report.resumed else "built ") + args.out)
        return 1 if report.bad or empty else 0
    if args.index is None:
        return _list()
    args.index = str(resolve_index(args.index))
    if cmd == "add":
        model = resolve_model(args.model) if args.model else None  # a path or a pretrained name; default: the index's
        report = builder.add(args.index, args.photos or None, model=model, device=args.device, chunk=args.chunk,
                             progress=not args.quiet, rebuild_index=args.rebuild, batch_photos=args.batch,
                             max_memory=_max_memory(args))
        _report(report, f"updated {args.index}")
        _refresh_units(args)
        return 1 if report.bad else 0
    if cmd == "remove":
        if not args.paths and not args.missing:
            raise AlexKitError("nothing to remove: give paths, or --missing")
        report = builder.remove(args.index, args.paths, missing=args.missing)
        print(f"removed {report.removed} photos from {args.index}; {report.indexed} remain")
        return 0
    return _info(args)


def _refresh_units(args: argparse.Namespace) -> None:
    """Extend the index's stored unit maxima ('alexnet-kit units') to the photos just added."""
    if not any(Path(args.index).glob("units/*/table.json")):
        return
    from ..explain.units import refresh  # defers torch
    from ..search.files import store_path  # defers numpy
    from ..search.store import Store  # defers numpy

    store = Store.open(store_path(Path(args.index)), verify=False)
    try:
        for layer in refresh(args.index, store, device=args.device, progress=not args.quiet):
            print(f"updated the stored {layer} units")
    finally:
        store.close()


def _list() -> int:
    """The user's indexes, and which one 'similar' and 'demo' open by default."""
    from ..search import SimilarityIndex  # defers torch (the parser must not load it)

    choice = index_choice()
    default = build_target(None)  # the default index's folder
    folders = list_indexes()
    if not folders:
        print(f"no indexes in {index_root()} yet: alexnet-kit index build {EXAMPLE_FOLDER}")
    for folder in folders:
        with SimilarityIndex.open(folder) as idx:
            d = idx.info()
        mark = "*" if folder == default else " "
        print(f"{mark} {folder.name:<16} {d['photos']:>9,} photos  {', '.join(d['roots'] or [])}")
    print(f"default index: {choice.value} ({choice.why})")
    return 0


def _info(args: argparse.Namespace) -> int:
    from ..search import SimilarityIndex  # defers torch (the parser must not load it)

    with SimilarityIndex.open(args.index) as idx:
        d = idx.info()
        if args.errors:
            d["unreadable_photos"] = [{"path": p, "error": e} for p, e in idx.unreadable(limit=10**9)]
    if args.json:
        print(json.dumps(d, indent=2))
        return 0
    print(f"index        {d['path']} (checked: store and FAISS file intact)")
    print(f"photos       {d['photos']:,} indexed, {d['unreadable']:,} unreadable skipped")
    print(f"model        {d['model']} ({'trained' if d['model_trained'] else 'UNTRAINED'}; fingerprint {d['model_fingerprint'][:16]})")
    print(f"features     {d['features']}, {d['dim']}-d")
    kind = "exact" if d["exact"] else "approximate"
    print(f"FAISS        {d['index_type']} ({kind}{', ' + d['search_params'] if d['search_params'] else ''}), "
          f"{d['bytes_per_photo'] or 0:,.0f} bytes/photo, {(d['index_bytes'] or 0) / 2**20:,.1f} MiB")
    print(f"store        {d['store_bytes'] / 2**20:,.1f} MiB (paths, checksums, float32 vectors)")
    print(f"folders      {', '.join(d['roots'] or [])}")
    for e in d.get("unreadable_photos", []):
        print(f"unreadable   {e['error']}")
    return 0
