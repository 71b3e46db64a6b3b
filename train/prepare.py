"""Photo folders -> the packed format (see :mod:`alexnet_kit.train.packed`), §2.

Every photo is decoded once with :func:`alexnet_kit.images.load_square`
(short side to 256, central 256x256 crop: the paper's offline step, and the
very function the runtime uses, so training and serving see identical
pixels) and written as a row of a memory-mapped uint8 array. Then the
training split's mean image (§2) and the eigen decomposition of its RGB
covariance (§4.1, PCA colour noise) are computed.

Parallel over cores (worker processes write their rows straight into the
memmap), resumable (a status array records finished rows; rerun the same
command after an interruption), and unreadable photos are skipped and
listed in ``report.json`` / ``report.txt``, never fatal.

Stopping: given an active :class:`~alexnet_kit.interrupt.StopOnSignal`,
SIGTERM or SIGINT stops at the next finished chunk, records every row done
so far (fsynced, then the status) and raises
:class:`~alexnet_kit.interrupt.Interrupted`; the workers ignore both
signals (the group's copy is not theirs) and are killed, losing at most the
chunks they were decoding, which the rerun decodes again.
"""
from __future__ import annotations

import json
import multiprocessing as mp
import multiprocessing.pool
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from alexnet_kit.errors import AlexKitError, FileProblem, ImageError
from alexnet_kit.fsutil import atomic_path
from alexnet_kit.images import load_square
from alexnet_kit.interrupt import Interrupted, StopOnSignal, ignore_in_worker, signal_name, starting_workers

from .packed import BAD, FORMAT, OK, PENDING, VERSION

CHUNK = 32  # photos per worker task: small enough for a smooth bar and cheap resume
STATS_CHUNK = 4096  # photos per mean/PCA task: one 1.5 MB sum back per task, not per 64 photos


@dataclass
class SplitPlan:
    files: list[str] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)


def _visible_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def _class_dirs(folder: Path) -> list[Path]:
    return sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))


def plan_splits(src: Path, val_fraction: float | None, seed: int, only: list[str] | None = None) -> tuple[list[str], dict[str, SplitPlan], str]:
    """(classes, {"train": plan, "val": plan}, layout) from an ImageNet-style tree or a class folder.

    ``only``: keep these classes (in sorted order, like every class list here).
    """
    if not src.is_dir():
        raise FileProblem(src, "not a folder of photos")
    if (src / "train").is_dir():
        train_root, val_root = src / "train", src / "val"
        layout = "train/val folders"
    else:
        train_root, val_root = src, None
        layout = "class folders"
    classes = [d.name for d in _class_dirs(train_root)]
    if only:
        missing = sorted(set(only) - set(classes))
        if missing:
            raise FileProblem(train_root, f"no class folder(s) {', '.join(missing)}")
        classes = sorted(set(only))
    if not classes:
        raise FileProblem(train_root, "no class subfolders (expected <class>/<photo> files)")
    index = {c: i for i, c in enumerate(classes)}
    plans = {"train": SplitPlan(), "val": SplitPlan()}
    split_here = val_fraction is not None or val_root is None or not val_root.is_dir()
    fraction = 0.2 if val_fraction is None else val_fraction
    if not 0.0 <= fraction < 1.0:
        raise AlexKitError(f"--val-fraction must be in [0, 1), got {fraction}")
    for c in classes:
        files = [str(p) for p in _visible_files(train_root / c)]
        if split_here:
            # fixed seed, per class: every class keeps the same share in validation
            rng = random.Random(f"{seed}:{c}")
            rng.shuffle(files)
            n_val = int(round(fraction * len(files))) if len(files) > 1 else 0
            val, train = sorted(files[:n_val]), sorted(files[n_val:])
        else:
            train, val = files, []
        plans["train"].files += train
        plans["train"].labels += [index[c]] * len(train)
        plans["val"].files += val
        plans["val"].labels += [index[c]] * len(val)
    if not split_here:
        layout += " (validation from val/)"
        for d in _class_dirs(val_root):
            if only and d.name not in only:
                continue
            if d.name not in index:
                raise FileProblem(d, f"class {d.name!r} is in val/ but not in train/")
            files = [str(p) for p in _visible_files(d)]
            plans["val"].files += files
            plans["val"].labels += [index[d.name]] * len(files)
    else:
        layout += f" (validation: {fraction:g} of each class, seed {seed})"
    if not plans["train"].files:
        raise FileProblem(train_root, "no files in the class folders")
    return classes, plans, layout


# -- workers ---------------------------------------------------------------
_W: dict = {}


def _init_worker(dst: str, size: int, counts: dict[str, int]) -> None:
    import torch  # here, not at the top: packing itself is torch-free; a worker loads it only to cap its threads

    ignore_in_worker()  # the group's SIGINT/SIGTERM: the parent stops the job (module docstring)
    torch.set_num_threads(1)
    _W["size"] = size
    _W["maps"] = {
        s: np.memmap(Path(dst) / s / "images.u8", dtype=np.uint8, mode="r+", shape=(n, size, size, 3))
        for s, n in counts.items() if n
    }


def _pack_chunk(task: tuple[str, list[tuple[int, str]]]) -> tuple[str, list[tuple[int, int, str]]]:
    split, items = task
    out = _W["maps"][split]
    results = []
    for row, path in items:
        try:
            out[row] = load_square(path, _W["size"])
            results.append((row, OK, ""))
        except ImageError as e:
            results.append((row, BAD, e.problem))
        except Exception as e:  # a decoder bug on one file must not stop a day-long job
            results.append((row, BAD, f"unexpected {type(e).__name__}: {e}"))
    # No flush here: msync of the whole mapping (252 GB for ImageNet) from every worker every
    # chunk. The parent fsyncs the file once before each status save (same durability order).
    return split, results


def _stats_chunk(task: tuple[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, int]:
    """Sum image (int64 HWC) and pixel second moments X^T X (3x3, int64) of some rows.

    Integer sums are exact, so the result does not depend on how rows are split
    over workers or in which order chunks finish; a worker reduces its whole
    chunk (thousands of photos) and sends one 1.5 MB sum back.
    """
    split, rows = task
    images = _W["maps"][split]
    s = np.zeros(images.shape[1:], np.int64)
    xtx = np.zeros((3, 3), np.int64)
    for i in range(0, len(rows), 16):  # 16 photos: a 25 MB int64 block
        imgs = images[rows[i:i + 16]]
        s += imgs.sum(0, dtype=np.int64)
        px = imgs.reshape(-1, 3).astype(np.int64)
        xtx += px.T @ px
    return s, xtx, len(rows)


def available_cpus() -> int:
    """CPUs this process may really use: its affinity mask and its cgroup's CPU quota
    (a container's --cpus), not os.cpu_count(), which counts the whole machine."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    for path, parse in (("/sys/fs/cgroup/cpu.max", _cgroup2_quota), ("/sys/fs/cgroup/cpu/cpu.cfs_quota_us", _cgroup1_quota)):
        try:
            quota = parse(Path(path))
        except (OSError, ValueError):
            continue
        if quota:
            n = min(n, max(1, int(quota + 0.5)))
            break
    return max(1, n)


def _cgroup2_quota(path: Path) -> float | None:
    q, period = path.read_text().split()[:2]
    return None if q == "max" else int(q) / int(period)


def _cgroup1_quota(path: Path) -> float | None:
    q = int(path.read_text())
    period = int((path.parent / "cpu.cfs_period_us").read_text())
    return None if q <= 0 else q / period


class _Pool(multiprocessing.pool.Pool):
    """A Pool whose terminate() kills its workers: they ignore SIGTERM (see _init_worker), so the
    stock terminate() (SIGTERM, then join) would wait for them forever. Killing loses nothing
    recorded: a row counts only once its result reached the parent."""

    @staticmethod
    def Process(ctx, *args, **kwds):
        proc = ctx.Process(*args, **kwds)
        proc.terminate = proc.kill
        return proc


# -- the job ---------------------------------------------------------------
def _save_status(dst: Path, status: dict[str, np.ndarray]) -> None:
    """Rows on disk first, then the record that says so: one fsync of each images file (it
    writes the dirty pages whoever dirtied them, through any mapping), then status.npy."""
    for k in status:
        with open(dst / k / "images.u8", "rb+") as f:
            os.fsync(f.fileno())
    for k in status:
        _save_npy(dst / k / "status.npy", status[k])


def _save_npy(path: Path, arr: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, arr)


def _write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def prepare(src: str | os.PathLike, dst: str | os.PathLike, size: int = 256, val_fraction: float | None = None,
            seed: int = 0, workers: int | None = None, progress: bool = True, force: bool = False,
            classes: list[str] | None = None, stop: StopOnSignal | None = None) -> dict:
    """Pack ``src`` into ``dst``; returns the report (counts, skipped files). Resumes a partial ``dst``.

    ``stop``: an active StopOnSignal; on its signal what is done is recorded and
    :class:`Interrupted` raised (module docstring)."""
    src, dst = Path(src).resolve(), Path(dst)
    workers = workers or available_cpus()
    classes, plans, layout = _load_or_make_plan(src, dst, size, val_fraction, seed, classes, force)
    if (dst / "dataset.json").is_file() and (dst / "report.json").is_file() and not force:
        return json.loads((dst / "report.json").read_text())  # already complete with these settings
    counts = {s: len(p.files) for s, p in plans.items()}
    status = {s: np.load(dst / s / "status.npy") for s in plans}
    errors = _read_errors(dst / "errors.jsonl")
    if _signal(stop):  # while planning (a long walk over ImageNet): the plan is saved, nothing packed yet
        raise Interrupted(_signal(stop), f"stopped by {signal_name(_signal(stop))} before packing: the plan is in {dst}; "
                                         f"run the same command again to pack")
    t0 = time.perf_counter()
    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    with starting_workers():
        pool = _Pool(workers, initializer=_init_worker, initargs=(str(dst), size, counts), context=ctx)
    with pool:
        _pack(pool, dst, plans, status, errors, progress, stop)
        total_sum, xtx, n = _rgb_sums(pool, src, dst, status, size, workers, progress, stop)
    mean_hwc = total_sum / n
    mean_rgb = total_sum.reshape(-1, 3).sum(0) / (n * size * size)
    cov = xtx / (n * size * size) - np.outer(mean_rgb, mean_rgb)
    skipped = [{"file": plans[s].files[r], "split": s, "problem": p} for (s, r), p in sorted(errors.items())]
    report = {
        "source": str(src), "layout": layout, "classes": len(classes),
        "packed": {s: int((status[s] == OK).sum()) for s in status},
        "skipped": {s: int((status[s] == BAD).sum()) for s in status},
        "skipped_files": skipped, "seconds": round(time.perf_counter() - t0, 1),
    }
    write_metadata(dst, mean_hwc, cov, classes, report, size=size, layout=layout, val_fraction=val_fraction, seed=seed)
    return report


def _signal(stop: StopOnSignal | None) -> int:
    """The signal that asked the job to stop (0: none)."""
    return (stop.signum or 0) if stop is not None else 0


def _load_or_make_plan(src: Path, dst: Path, size: int, val_fraction: float | None, seed: int,
                       only: list[str] | None, force: bool) -> tuple[list[str], dict[str, SplitPlan], str]:
    """(classes, plans, layout): the plan ``dst`` holds (refused when made with other settings), or a
    new one, with each split's files laid out empty (a new plan drops the old metadata)."""
    plan_path = dst / "plan.json"
    if plan_path.is_file() and not force:
        plan = json.loads(plan_path.read_text())
        wanted = {"src": str(src), "size": size, "val_fraction": val_fraction, "seed": seed, "classes": only}
        if {k: plan["args"].get(k) for k in wanted} != wanted:
            raise AlexKitError(f"{dst}: holds a preparation with other settings {plan['args']}; use another DST or --force")
        return plan["classes"], {s: SplitPlan(**plan["splits"][s]) for s in ("train", "val")}, plan["layout"]
    classes, plans, layout = plan_splits(src, val_fraction, seed, only)
    dst.mkdir(parents=True, exist_ok=True)
    for s, p in plans.items():
        d = dst / s
        d.mkdir(exist_ok=True)
        n = len(p.files)
        with open(d / "images.u8", "wb") as f:  # sparse file of the final size
            f.truncate(n * size * size * 3)
        _save_npy(d / "labels.npy", np.asarray(p.labels, dtype=np.int64))
        _save_npy(d / "status.npy", np.zeros(n, dtype=np.uint8))
        _write_text(d / "files.txt", "".join(f + "\n" for f in p.files))
    for f in ("dataset.json", "mean.npy", "pca.npz"):
        (dst / f).unlink(missing_ok=True)
    _write_text(plan_path, json.dumps({
        "args": {"src": str(src), "size": size, "val_fraction": val_fraction, "seed": seed, "classes": only},
        "classes": classes, "layout": layout,
        "splits": {s: {"files": p.files, "labels": p.labels} for s, p in plans.items()},
    }))
    return classes, plans, layout


def _read_errors(path: Path) -> dict[tuple[str, int], str]:
    """The problems of the photos an earlier (interrupted) run skipped, by (split, row)."""
    errors = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            e = json.loads(line)
            errors[(e["split"], e["row"])] = e["problem"]
    return errors


def _pack(pool: _Pool, dst: Path, plans: dict[str, SplitPlan], status: dict[str, np.ndarray],
          errors: dict[tuple[str, int], str], progress: bool, stop: StopOnSignal | None) -> None:
    """Decode every pending row into its split's memmap, recording each in ``status`` (saved every
    2 s, the resume point) and each skipped photo in ``errors`` and errors.jsonl."""
    tasks = []
    for s, p in plans.items():
        todo = [(int(r), p.files[r]) for r in np.flatnonzero(status[s] == PENDING)]
        tasks += [(s, todo[i:i + CHUNK]) for i in range(0, len(todo), CHUNK)]
    total = sum(len(p.files) for p in plans.values())
    done = total - sum(len(t[1]) for t in tasks)
    bar = tqdm(total=total, initial=done, unit="img", desc="pack", disable=not progress, dynamic_ncols=True)
    last_save = time.monotonic()
    with open(dst / "errors.jsonl", "a", encoding="utf-8") as err_log:
        for s, results in pool.imap_unordered(_pack_chunk, tasks):
            for row, st, problem in results:
                status[s][row] = st
                if st == BAD:
                    errors[(s, row)] = problem
                    err_log.write(json.dumps({"split": s, "row": row, "problem": problem}) + "\n")
            err_log.flush()
            bar.update(len(results))
            if _signal(stop):
                break  # the pool's with block's exit kills the workers (_Pool)
            if time.monotonic() - last_save > 2.0:  # status is the resume point
                _save_status(dst, status)
                last_save = time.monotonic()
    bar.close()
    _save_status(dst, status)
    if _signal(stop):
        n_done = sum(int((status[s] != PENDING).sum()) for s in status)
        raise Interrupted(_signal(stop), f"stopped by {signal_name(_signal(stop))}: {n_done} of {total} photos are packed "
                                         f"and recorded in {dst}; run the same command again to continue")


def _rgb_sums(pool: _Pool, src: Path, dst: Path, status: dict[str, np.ndarray], size: int, workers: int,
              progress: bool, stop: StopOnSignal | None) -> tuple[np.ndarray, np.ndarray, int]:
    """For §2's mean image and §4.1's RGB covariance, over the readable training photos: the sum
    image (int64 HWC), the pixels' X^T X (3x3) and the number of photos."""
    rows = np.flatnonzero(status["train"] == OK)
    if not len(rows):
        raise AlexKitError(f"{src}: not one training photo could be read (see {dst / 'report.txt'})")
    step = max(64, min(STATS_CHUNK, -(-len(rows) // (4 * workers))))  # >= 4 tasks a worker: a moving bar
    stat_tasks = [("train", rows[i:i + step]) for i in range(0, len(rows), step)]
    total_sum = np.zeros((size, size, 3), np.int64)
    xtx = np.zeros((3, 3), np.int64)
    n = 0
    bar = tqdm(total=len(rows), unit="img", desc="mean+pca", disable=not progress, dynamic_ncols=True)
    for s_img, s_xtx, k in pool.imap_unordered(_stats_chunk, stat_tasks):  # integer sums: any order
        total_sum += s_img
        xtx += s_xtx
        n += k
        bar.update(k)
        if _signal(stop):  # the sums are quick to redo; every photo stays packed
            raise Interrupted(_signal(stop), f"stopped by {signal_name(_signal(stop))} while computing the mean image and "
                                             f"PCA: every photo is packed in {dst}; run the same command again to finish")
    bar.close()
    return total_sum, xtx, n


def write_metadata(dst: Path, mean_hwc: np.ndarray, cov: np.ndarray, classes: list[str], report: dict, *, size: int,
                   layout: str, val_fraction: float | None, seed: int) -> None:
    """A packed folder's files beside the rows, each written atomically: the mean image (§2), the
    RGB PCA (§4.1), the report, the classes, and last ``dataset.json``, which marks it complete.

    ``report``: ``source``, ``packed`` and ``skipped`` (counts per split), optionally ``skipped_files``."""
    eigvals, eigvecs = pca_of_covariance(cov)
    _save_npy(dst / "mean.npy", np.ascontiguousarray(mean_hwc.transpose(2, 0, 1), dtype=np.float32))
    with atomic_path(dst / "pca.npz") as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, eigvals=eigvals.astype(np.float32), eigvecs=eigvecs.astype(np.float32), cov=cov)
    _write_text(dst / "report.json", json.dumps(report, indent=1))
    _write_text(dst / "report.txt", "".join(f"{e['file']}: {e['problem']}\n" for e in report.get("skipped_files", [])))
    _write_text(dst / "classes.txt", "".join(c + "\n" for c in classes))
    _write_text(dst / "dataset.json", json.dumps({
        "format": FORMAT, "version": VERSION, "complete": True, "size": size, "classes": classes,
        "source": report["source"], "layout": layout, "val_fraction": val_fraction, "seed": seed,
        "counts": report["packed"], "skipped": report["skipped"],
    }, indent=1))


def pca_of_covariance(cov: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """§4.1: eigenvalues (descending) and eigenvectors (columns) of the 3x3 RGB covariance."""
    vals, vecs = np.linalg.eigh(cov)
    order = np.argsort(vals)[::-1]
    vecs = vecs[:, order]
    vecs = vecs * np.where(vecs.sum(0) < 0, -1.0, 1.0)  # a fixed sign, so files are reproducible
    return vals[order], vecs
