"""Similarity search at 10k, 100k and 1M photos: recall@10, latency, memory per vector.

    python benchmarks/bench_search.py --model model.safetensors              # 10k, 100k, 1M
    python benchmarks/bench_search.py --model model.safetensors --sizes 10000 # quick

What it measures, all in one run on the same vectors and queries:

* ``numpy``: brute force, one query at a time (``X @ q``), where X fits in memory;
* ``faiss-flat``: FAISS exact search (IndexFlatL2), where it fits;
* ``ours``: the index ``alexnet-kit index build`` chooses for that size
  (``Flat`` up to 20k, then PCA to 256 + IVF + 8-bit scalar quantisation),
  at its default ``nprobe`` and a sweep of others;
* ``pca-exact``: exact search after the same PCA, to show what the PCA alone costs.

The data, said plainly: the real fc7 features (centre crop, L2-normalised:
the index's default) of every real photo in ../shared/data/imagenet-samples
and ../shared/data/caltech101 (about 6,500 photos, extracted once and
cached), extended to a million by synthetic vectors: each one interpolates
between a real feature and one of its 10 nearest real neighbours (SMOTE)
plus Gaussian noise with the real features' own covariance (top 512
principal directions, scaled by ``--noise``), then ReLU and L2
normalisation as a real fc7 vector. Queries are 500 more such vectors, not
in the database. Ground truth is exact search over the full 4096-d vectors
by chunked brute force, so 1M x 4096 float32 (16 GB) never sits in memory:
vectors are generated in chunks from fixed seeds and streamed into the
index. Recall@10 = |approximate top 10 ∩ exact top 10| / 10.
"""
from __future__ import annotations

import argparse
import gc
import hashlib
import os
import resource
import sys
import time
from pathlib import Path

from machine import describe  # noqa: E402  (benchmarks/machine.py)

import numpy as np

CHUNK = 20_000
K = 10




def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


# -- real features ----------------------------------------------------------

def real_features(model: Path, shared: Path, cache: Path, crops: int) -> np.ndarray:
    from alexnet_kit.checkpoint import weights_fingerprint
    from alexnet_kit.features import FeatureExtractor
    from alexnet_kit.images import is_image_path

    fp = weights_fingerprint(model) if model.suffix == ".safetensors" else model.stem
    path = cache / f"fc7-{fp[:16]}-crops{crops}.npy"
    if path.exists():
        return np.load(path)
    photos = sorted(str(p) for d in ("imagenet-samples", "caltech101") for p in (shared / d).rglob("*") if is_image_path(p))
    if not photos:
        sys.exit(f"no photos under {shared}")
    from tqdm import tqdm

    fx = FeatureExtractor.load(model, crops=crops)
    vecs = [r.vector for r in tqdm(fx.extract(photos), total=len(photos), desc="real fc7", unit="photo") if r.vector is not None]
    X = np.stack(vecs).astype(np.float32)
    cache.mkdir(parents=True, exist_ok=True)
    np.save(path, X)
    return X


# -- synthetic extension ----------------------------------------------------

class Generator:
    """Deterministic chunks of SMOTE-plus-structured-noise vectors around the real ones."""

    def __init__(self, real: np.ndarray, noise: float, seed: int = 0, cache: Path | None = None):
        self.real = real
        self.seed = seed
        n = len(real)
        cached = cache if cache and cache.exists() else None
        if cached:
            z = np.load(cached)
            self.nbrs, s, vt = z["nbrs"], z["s"], z["vt"]
        else:
            g = real @ real.T
            np.fill_diagonal(g, -np.inf)
            self.nbrs = np.argpartition(-g, 10, axis=1)[:, :10]  # 10 nearest real neighbours (cosine)
            del g
            # principal directions of the real features: eigenvectors of their covariance
            centred = real - real.mean(0)
            evals, evecs = np.linalg.eigh(centred.T @ centred / (n - 1))
            s, vt = np.sqrt(np.maximum(evals[::-1], 0)), evecs[:, ::-1].T[:512].copy()
            if cache:
                np.savez(cache, nbrs=self.nbrs, s=s, vt=vt)
        r = min(512, len(vt))
        self.noise_basis = (s[:r, None] * vt[:r]).astype(np.float32) * noise
        self.explained = float((s[:256] ** 2).sum() / (s ** 2).sum())

    def chunk(self, index: int, size: int = CHUNK, stream: int = 0) -> np.ndarray:
        rng = np.random.default_rng([self.seed, stream, index])
        i = rng.integers(0, len(self.real), size)
        j = self.nbrs[i, rng.integers(0, 10, size)]
        u = rng.random(size, dtype=np.float32)[:, None]
        x = (1 - u) * self.real[i] + u * self.real[j]
        x += rng.standard_normal((size, self.noise_basis.shape[0]), dtype=np.float32) @ self.noise_basis
        np.maximum(x, 0, out=x)  # fc7 is taken after its ReLU
        x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        return x


def merge_topk(best_s, best_i, scores, offset):
    """Keep the K largest scores per row across chunks."""
    k = min(K, scores.shape[1])
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    s = np.take_along_axis(scores, part, 1)
    cand_s = np.concatenate([best_s, s], 1)
    cand_i = np.concatenate([best_i, part + offset], 1)
    order = np.argsort(-cand_s, axis=1)[:, :K]
    return np.take_along_axis(cand_s, order, 1), np.take_along_axis(cand_i, order, 1)


# -- measuring --------------------------------------------------------------

def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f[f >= 0]) & set(t)) / K for f, t in zip(found, truth)]))


def timed_queries(search, Q: np.ndarray) -> tuple[np.ndarray, float, float]:
    """One query at a time, as a user asks: (ids, p50 ms, p95 ms)."""
    out, times = [], []
    search(Q[:5])  # warm up
    for q in Q:
        t = time.perf_counter()
        out.append(search(q[None]))
        times.append(time.perf_counter() - t)
    ms = np.array(times) * 1e3
    return np.concatenate(out), float(np.percentile(ms, 50)), float(np.percentile(ms, 95))


def report(rows: list[dict], name: str, n: int, ids, p50, p95, bytes_per_vec, truth, note="") -> None:
    r = recall(ids, truth)
    rows.append(dict(n=n, method=name, recall=r, p50=p50, p95=p95, bpv=bytes_per_vec, note=note))
    print(f"  {n:>9,}  {name:<34} recall@10 {r:6.3f}  p50 {p50:8.2f} ms  p95 {p95:8.2f} ms  "
          f"{bytes_per_vec:8.0f} B/vector  {note}", flush=True)


def bench_ours(rows, n, index, spec, Q, truth, default_params, sweep):
    from alexnet_kit.search.factory import apply_search_params, index_bytes

    bpv = index_bytes(index) / index.ntotal
    for params in sweep:
        apply_search_params(index, params)
        ids, p50, p95 = timed_queries(lambda q: index.search(q, K)[1], Q)
        tag = " (default)" if params == default_params else ""
        report(rows, f"ours {spec} {params}{tag}", n, ids, p50, p95, bpv, truth)
    apply_search_params(index, default_params)


def pca_sweep(gen: Generator, n: int = 100_000, queries: int = 200) -> None:
    """Exact search after a PCA to d dims (plus 8- and 4-bit codes): what the PCA alone keeps."""
    import faiss

    X = np.concatenate([gen.chunk(i, CHUNK) for i in range(n // CHUNK)])
    Q = gen.chunk(0, queries, stream=1)
    truth = np.argsort(-(Q @ X.T), 1)[:, :K]
    pca = faiss.PCAMatrix(X.shape[1], 1024)
    pca.train(X[:20_000])
    Xr, Qr = pca.apply(X), pca.apply(Q)
    print(f"| PCA dims | recall@10, exact after PCA | + SQ8 | + SQ4 |  ({n:,} vectors, {queries} queries)")
    print("| ---: | ---: | ---: | ---: |")
    for d in (256, 384, 512, 768, 1024):
        xs, qs = np.ascontiguousarray(Xr[:, :d]), np.ascontiguousarray(Qr[:, :d])
        out = []
        for index in (faiss.IndexFlatL2(d), faiss.IndexScalarQuantizer(d, faiss.ScalarQuantizer.QT_8bit),
                      faiss.IndexScalarQuantizer(d, faiss.ScalarQuantizer.QT_4bit)):
            index.train(xs)
            index.add(xs)
            out.append(recall(index.search(qs, K)[1], truth))
        print(f"| {d} | {out[0]:.3f} | {out[1]:.3f} | {out[2]:.3f} |", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="checkpoint whose fc7 features are the real data")
    ap.add_argument("--shared", help="the shared data folder (default: $ALEXNET_KIT_SHARED_DATA or ../shared/data)")
    ap.add_argument("--cache", default=str(Path.home() / ".cache" / "alexnet-kit" / "bench"))
    ap.add_argument("--sizes", default="10000,100000,1000000")
    ap.add_argument("--queries", type=int, default=500)
    ap.add_argument("--noise", type=float, default=0.25, help="scale of the structured noise (1 = the real features' spread)")
    ap.add_argument("--fit-gb", type=float, default=2.0, help="run numpy / FAISS Flat only where the vectors take at most this")
    ap.add_argument("--threads", type=int, default=2, help="FAISS threads for building (queries are timed one at a time)")
    ap.add_argument("--pca-sweep", action="store_true", help="only: recall of exact search after PCA to 256..1024 dims, at 100k")
    ap.add_argument("--pca-exact", action="store_true", help="also time exact search after a PCA to 256 (one more PCA to train)")
    args = ap.parse_args()

    import faiss

    from alexnet_kit.search.factory import default_search_params, make_index, resolve_spec, train_index, train_size

    faiss.omp_set_num_threads(args.threads)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    sizes = sorted(int(s) for s in args.sizes.split(","))
    print(f"machine: {describe('faiss', 'numpy')}")
    print(f"date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; load average {os.getloadavg()[0]:.1f} (other agents share the CPU)")
    t0 = time.perf_counter()
    from alexnet_kit.paths import shared_data

    shared = Path(args.shared) if args.shared else shared_data("caltech101").parent
    real = real_features(Path(args.model), shared, Path(args.cache), crops=1)
    dim = real.shape[1]
    gen = Generator(real, args.noise, cache=Path(args.cache) / f"generator-{hashlib.sha256(real.tobytes()).hexdigest()[:16]}.npz")
    print(f"real fc7 vectors: {len(real)} x {dim} from {args.model}; top-256 PCs of the real set explain "
          f"{100 * gen.explained:.1f}% of its variance; noise scale {args.noise}")
    if args.pca_sweep:
        pca_sweep(gen)
        return 0
    Q = gen.chunk(0, args.queries, stream=1)

    rows: list[dict] = []
    # exact top-10 per size by chunked brute force over the full vectors
    best_s = np.full((len(Q), 0), -np.inf, np.float32)
    best_i = np.zeros((len(Q), 0), np.int64)
    truths: dict[int, np.ndarray] = {}
    big = sizes[-1]
    keep_n = max([n for n in sizes if n * dim * 4 / 2**30 <= args.fit_gb] or [0])
    kept: list[np.ndarray] = []
    big_index = None
    big_spec = resolve_spec("auto", big, dim)
    done = 0
    chunk_id = 0
    print(f"{'n':>11}  {'method':<34}")
    while done < big:
        size = min([CHUNK] + [n - done for n in sizes + [keep_n] if n > done])  # stop at every size
        X = gen.chunk(chunk_id, size)
        chunk_id += 1
        best_s, best_i = merge_topk(best_s, best_i, Q @ X.T, done)
        if done < keep_n:
            kept.append(X)
        if big_index is not None:
            big_index.add_with_ids(X, np.arange(done, done + size, dtype=np.int64))
        done += size
        for n in sizes:
            if done == n:
                truths[n] = best_i.copy()
        if done == min(keep_n, big) or (keep_n == 0 and done == size):
            # everything that fits is in memory: bench the small sizes in full, then train the big index
            Xk = np.concatenate(kept) if kept else X
            kept = []
            for n in [s for s in sizes if s <= done]:
                bench_size(rows, n, Xk[:n], Q, truths[n], dim, args)
            if big > done:
                t = time.perf_counter()
                big_index = make_index(big_spec, dim)
                sample = Xk[: train_size(big_spec, big)]
                train_index(big_index, sample)
                big_index.add_with_ids(Xk, np.arange(len(Xk), dtype=np.int64))
                print(f"  (trained {big_spec} on {len(sample):,} vectors in {time.perf_counter() - t:.0f} s)", flush=True)
            kept = []
            del Xk
            gc.collect()
    if big_index is not None:
        default = default_search_params(big_spec)
        sweep = [default]
        if "IVF" in big_spec:
            sweep = sorted({default, *(f"nprobe={p}" for p in (16, 32, 64, 128))}, key=lambda s: int(s.split("=")[1]))
        bench_ours(rows, big, big_index, big_spec, Q, truths[big], default, sweep)
        print(f"  {big:>9,}  numpy / faiss-flat: not run, {big * dim * 4 / 2**30:.1f} GB of float32 vectors do not fit the memory budget")
    print(f"total {time.perf_counter() - t0:.0f} s; peak RSS {peak_rss_gb():.2f} GB")
    print("\n| vectors | method | recall@10 | p50 ms | p95 ms | bytes/vector |")
    print("| ---: | --- | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['n']:,} | {r['method']} | {r['recall']:.3f} | {r['p50']:.2f} | {r['p95']:.2f} | {r['bpv']:.0f} |")
    return 0


def bench_size(rows, n, X, Q, truth, dim, args):
    import faiss

    X = np.ascontiguousarray(X)
    def numpy_search(q):
        s = X @ q[0]
        top = np.argpartition(-s, K)[:K]
        return top[np.argsort(-s[top])][None]

    ids, p50, p95 = timed_queries(numpy_search, Q)
    report(rows, "numpy brute force (X @ q)", n, ids, p50, p95, dim * 4, truth)
    flat = faiss.IndexFlatL2(dim)
    flat.add(X)
    ids, p50, p95 = timed_queries(lambda q: flat.search(q, K)[1], Q)
    report(rows, "faiss-flat IndexFlatL2", n, ids, p50, p95, dim * 4, truth)
    numpy_p50 = rows[-2]["p50"]
    flat = None  # frees the vectors (not `del`: the timed lambda above closes over the name)
    if not args.pca_exact:
        return _ours(rows, n, X, Q, truth, dim, numpy_p50)
    # what the PCA alone keeps: exact search in the reduced space
    pca = faiss.PCAMatrix(dim, 256)
    pca.train(X[: min(n, 25_000)])
    Xr = pca.apply(X)
    fr = faiss.IndexFlatL2(256)
    fr.add(Xr)
    ids, p50, p95 = timed_queries(lambda q: fr.search(pca.apply(q), K)[1], Q)
    report(rows, "pca-exact PCA256 + Flat", n, ids, p50, p95, 256 * 4, truth)
    fr = Xr = None
    _ours(rows, n, X, Q, truth, dim, numpy_p50)


def _ours(rows, n, X, Q, truth, dim, numpy_p50):
    from alexnet_kit.search.factory import default_search_params, make_index, resolve_spec, train_index, train_size

    for kind in ("auto",):
        spec = resolve_spec(kind, n, dim)
        t = time.perf_counter()
        index = make_index(spec, dim)
        if not index.is_trained:
            train_index(index, X[: train_size(spec, n)])
        index.add_with_ids(X, np.arange(n, dtype=np.int64))
        build = time.perf_counter() - t
        default = default_search_params(spec)
        if "IVF" in spec:
            sweep = sorted({default, *(f"nprobe={p}" for p in (8, 16, 32, 64))}, key=lambda s: int(s.split("=")[1]))
        else:
            sweep = [default]
        print(f"  (built {spec} over {n:,} in {build:.1f} s)")
        bench_ours(rows, n, index, spec, Q, truth, default, sweep)
        del index
    print(f"  numpy p50 {numpy_p50:.2f} ms at {n:,}; peak RSS so far {peak_rss_gb():.2f} GB", flush=True)


if __name__ == "__main__":
    sys.exit(main())
