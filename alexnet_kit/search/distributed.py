"""Build an index with several processes (or GPUs): each rank extracts a shard, rank 0 merges.

    torchrun --standalone --nproc_per_node 2 -m alexnet_kit.search.distributed PHOTOS --out INDEX --model M
    torchrun --nnodes 4 --nproc_per_node 8 --rdzv-endpoint HOST:29500 -m alexnet_kit.search.distributed ...

Rank 0 walks the folders once and broadcasts the sorted photo list (a walk of
ImageNet's 1.28M files from every rank multiplies the metadata load on a
shared filesystem); every rank takes every ``world``-th photo; it writes its features to ``INDEX/shards/rank-R-of-W.sqlite`` (the
store format with the vectors inside SQLite, committed in chunks, so a killed run resumes: photos in
any shard or in the index are not extracted again, whatever the new world
size). After a barrier, rank 0 merges the shards into the index's store and
builds the FAISS index (on the GPUs when FAISS has them), then deletes the
shards. Backend: NCCL with CUDA (with a gloo side for CPU
objects), each rank bound to its GPU before the group starts; gloo on CPUs. On a shared filesystem the
ranks may live on different machines.
"""
from __future__ import annotations

import argparse
import datetime
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from ..errors import AlexKitError
from . import builder, files
from .index_settings import IndexSettings
from .store import Record, Store


def shard_path(root: Path, rank: int, world: int) -> Path:
    return root / "shards" / f"rank-{rank}-of-{world}.sqlite"


def _done(root: Path) -> dict[str, tuple[int, int]]:
    """(size, mtime) of every photo already extracted: in the index's store or any shard."""
    done: dict[str, tuple[int, int]] = {}
    stores = sorted((root / "shards").glob("rank-*.sqlite")) if (root / "shards").is_dir() else []
    if files.store_path(root).exists():
        stores.append(files.store_path(root))
    for p in stores:
        s = Store.open(p, verify=False)
        try:
            done.update({r.path: (r.size, r.mtime_ns) for r in s.rows().values()})
        finally:
            s.close()
    return done


def shared_photo_list(paths: list[str], rank: int, world: int) -> list[str]:
    """The sorted photo list, walked by rank 0 only and sent to the others (errors too)."""
    if world == 1:
        return builder.walk_photos(paths)
    box: list = [None]
    if rank == 0:
        try:
            box = [("ok", builder.walk_photos(paths))]
        except AlexKitError as e:
            box = [("error", str(e))]
    dist.broadcast_object_list(box, src=0)
    kind, value = box[0]
    if kind == "error":
        raise AlexKitError(value)
    if rank == 0:
        print(f"rank 0 listed {len(value)} photos for {world} ranks", file=sys.stderr, flush=True)
    return value


def extract_shard(root: Path, photos: list[str], model: Path, rank: int, world: int, *, crops: int, metric: str,
                  device: str, chunk: int, progress: bool, batch_photos: int | None = None):
    # every rank reads the same stored verdict (else the fp32 reference): the same engine and precision
    fx = builder.index_extractor(model, None, device=device, crops=crops, metric=metric, batch_photos=batch_photos)
    mine = photos[rank::world]
    done = _done(root)
    if world > 1:  # every rank has read the shards before any rank creates its own (half-made, it reads as damaged)
        dist.barrier()
    mine = [p for p in mine if done.get(p) != _stat(p)]
    path = shard_path(root, rank, world)
    # a rank's store is temporary (merged, then deleted): its vectors stay inside it (store version 1)
    store = Store.open(path) if path.exists() else Store.create(path, {**IndexSettings.of(fx, model).to_store(),
                                                                       "state": "shard"}, legacy=True)
    try:
        IndexSettings.from_store(store).check(fx, model, root)
        report = builder.UpdateReport()
        todo = builder.plan(store, mine, report)
        builder.extract_into(store, fx, todo, report, chunk, progress and rank == 0)
    finally:
        store.close()
    return report, fx


def _stat(p: str) -> tuple[int, int] | None:
    try:
        st = os.stat(p)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


def merge(root: Path, model: Path, fx, photos_roots: list[str], index_type: str, chunk: int = 1024,
          progress: bool = False) -> builder.UpdateReport:
    """Rank 0: every shard's rows into the index's store, then the FAISS index from the store."""
    report = builder.UpdateReport()
    spath = files.store_path(root)
    if spath.exists():
        store = Store.open(spath)
        IndexSettings.from_store(store).check(fx, model, root)
    else:
        store = Store.create(spath, {**IndexSettings.of(fx, model).to_store(), "state": "building", "index_type": index_type,
                                     "roots": photos_roots})
    dim = fx.dim
    try:
        have = {p: (r.size, r.mtime_ns) for p, r in store.rows().items()}
        shards = sorted((root / "shards").glob("rank-*.sqlite"))
        for sp in shards:
            shard = Store.open(sp)
            try:
                IndexSettings.from_store(shard).check(fx, model, root)
                q = shard.conn.execute("SELECT path, size, mtime_ns, checksum, vector, error FROM photos ORDER BY id")
                while rows := q.fetchmany(chunk):
                    recs = []
                    for path, size, mtime, checksum, blob, error in rows:
                        if have.get(path) == (size, mtime):
                            continue
                        vec = None if blob is None else Store._unpack([blob], dim)[0]
                        recs.append(Record(path, size, mtime, checksum, vec, error))
                        report.extracted += vec is not None
                        report.bad += vec is None
                        if error:
                            report.errors.append((path, error))
                    if recs:
                        store.commit(recs, dim)
            finally:
                shard.close()
        builder.finish(root, store, report, [], [], was_ok=False, progress=progress)
    finally:
        store.close()
    for sp in shards:
        sp.unlink()
    try:
        (root / "shards").rmdir()
    except OSError:
        pass
    return report


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="torchrun ... -m alexnet_kit.search.distributed", description=__doc__.split("\n\n")[0])
    ap.add_argument("photos", nargs="+")
    ap.add_argument("-o", "--out", required=True)
    ap.add_argument("-m", "--model", required=True)
    ap.add_argument("--crops", type=int, choices=[1, 10], default=1)
    ap.add_argument("--metric", choices=["cosine", "euclidean"], default="cosine")
    ap.add_argument("--index-type", default="auto")
    ap.add_argument("--chunk", type=int, default=builder.CHUNK)
    ap.add_argument("--batch", type=int)
    ap.add_argument("-q", "--quiet", action="store_true")
    args = ap.parse_args(argv)

    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    local_rank, local_world = int(os.environ.get("LOCAL_RANK", 0)), int(os.environ.get("LOCAL_WORLD_SIZE", 1))
    cuda = torch.cuda.is_available()
    gpu = local_rank % torch.cuda.device_count() if cuda else None
    device = f"cuda:{gpu}" if cuda else "cpu"
    if cuda:
        # before anything touches CUDA: otherwise every rank opens a context on GPU 0 and
        # NCCL guesses the device of each rank
        torch.cuda.set_device(gpu)
    else:  # share the cores instead of oversubscribing them
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_world))
    if world > 1:
        kwargs = {"device_id": torch.device("cuda", gpu)} if cuda else {}
        dist.init_process_group("cpu:gloo,cuda:nccl" if cuda else "gloo", timeout=datetime.timedelta(hours=12), **kwargs)
    root = Path(args.out)
    model = Path(args.model)
    try:
        if files.store_path(root).exists():  # every rank checks, so none waits at a barrier alone
            s = Store.open(files.store_path(root))
            complete = s.get("state") == "complete"
            s.close()
            if complete:
                raise AlexKitError(f"{root}: an index is already there: update it with 'alexnet-kit index add {root}'")
        photos = shared_photo_list(args.photos, rank, world)
        report, fx = extract_shard(root, photos, model, rank, world, crops=args.crops, metric=args.metric, device=device,
                                   chunk=args.chunk, progress=not args.quiet, batch_photos=args.batch)
        print(f"rank {rank}/{world}: extracted {report.extracted}, unreadable {report.bad}, "
              f"skipped {report.unchanged} already done", file=sys.stderr, flush=True)
        if world > 1:
            dist.barrier()
        if rank == 0:
            merged = merge(root, model, fx, [str(Path(p).resolve()) for p in args.photos], args.index_type,
                           progress=not args.quiet)
            print(f"merged {world} shards into {root}: {merged.indexed} photos indexed ({merged.spec}), "
                  f"{merged.bad} unreadable skipped")
        if world > 1:
            dist.barrier()
    except AlexKitError as e:
        print(f"alexnet-kit: error: {e}", file=sys.stderr)
        return 2
    finally:
        if world > 1 and dist.is_initialized():
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
