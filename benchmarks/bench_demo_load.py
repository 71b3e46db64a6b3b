"""Load test of the demo server: N requests, C at a time, from gradio_client.

    .venv/bin/python benchmarks/bench_demo_load.py                       # paper network, untrained
    .venv/bin/python benchmarks/bench_demo_load.py --model M --index I   # also /similar
    .venv/bin/python benchmarks/bench_demo_load.py --requests 64 --concurrency 8 --runs 3

Starts the real server (`alexnet-kit demo`, in its own process, on
127.0.0.1 and a free port), waits for it, then sends ``--requests`` calls
to /classify (and /similar with an index), ``--concurrency`` in flight at
once, each uploading one of the example photos. Reports errors, latency
p50/p95/max per request (submit to result, upload included) and
throughput.

Baseline, in the same run and taking turns with the server run by run:
the same photos through the same :class:`DemoService` in this process,
one after another, no HTTP and no queue. Its latency is the model's own cost, so server p50 / baseline p50
shows what queueing behind the other requests and the web layer add, and
the throughput ratio shows what the server keeps of the model's speed.
Each figure is the median over ``--runs`` runs.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from machine import describe  # noqa: E402  (benchmarks/machine.py)

from alexnet_kit.apps.screenshot import free_port  # noqa: E402

import numpy as np

ROOT = Path(__file__).resolve().parents[1]




def percentiles(lat: list[float]) -> dict[str, float]:
    a = np.asarray(lat)
    return {"p50": float(np.percentile(a, 50)), "p95": float(np.percentile(a, 95)), "max": float(a.max())}


def start_server(model: Path, index: Path | None, port: int, log: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "alexnet_kit", "demo", "--model", str(model), "--port", str(port)]
    if index:
        cmd += ["--index", str(index)]
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"}
    return subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env, cwd=ROOT, preexec_fn=die_with_parent)


def die_with_parent() -> None:
    """Linux: the server gets SIGTERM if this script is killed, so it never outlives the benchmark."""
    import ctypes
    import signal

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def wait_ready(url: str, proc: subprocess.Popen, log: Path, timeout: float = 180) -> None:
    import httpx

    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}:\n{log.read_text()[-2000:]}")
        try:
            if httpx.get(url + "config", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"server not ready after {timeout:.0f} s:\n{log.read_text()[-2000:]}")


def load_run(url: str, endpoint: str, photos: list[Path], requests: int, concurrency: int) -> dict:
    from gradio_client import Client, handle_file

    # one client per worker, like separate users; the gallery's pictures are
    # not downloaded, so latency is the server's answer, not the client's disk
    clients = [Client(url, verbose=False, download_files=False) for _ in range(concurrency)]
    jobs = [photos[i % len(photos)] for i in range(requests)]
    errors: list[str] = []

    def call(i: int) -> float:
        t = time.perf_counter()
        try:
            clients[i % concurrency].predict(handle_file(str(jobs[i])), api_name=endpoint)
        except Exception as e:  # counted and shown, never hidden
            errors.append(f"{jobs[i].name}: {type(e).__name__}: {e}")
        return time.perf_counter() - t

    t0 = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        lat = list(pool.map(call, range(requests)))
    wall = time.perf_counter() - t0
    return {**percentiles(lat), "wall": wall, "rps": requests / wall, "errors": errors}


def baseline_run(service, endpoint: str, photos: list[Path], requests: int) -> dict:
    lat = []
    t0 = time.perf_counter()
    for i in range(requests):
        p = photos[i % len(photos)]
        t = time.perf_counter()
        if endpoint == "/classify":
            service.classify(service.read_photo(p), 5)
        else:
            service.similar(p, 8)
        lat.append(time.perf_counter() - t)
    wall = time.perf_counter() - t0
    return {**percentiles(lat), "wall": wall, "rps": requests / wall, "errors": []}


def median_of(runs: list[dict]) -> dict:
    keys = ("p50", "p95", "max", "wall", "rps")
    return {k: statistics.median(r[k] for r in runs) for k in keys} | {"errors": sum(len(r["errors"]) for r in runs)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", type=Path, help="checkpoint or artifact (default: a fresh untrained paper network in a temp dir)")
    ap.add_argument("--index", type=Path, help="similarity index: also load-test /similar")
    ap.add_argument("--photos", type=Path, help="folder of photos to send (default: the example photos)")
    ap.add_argument("--requests", type=int, default=64)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()

    from alexnet_kit.apps.service import DemoService

    from alexnet_kit.paths import example_photos

    photos = sorted(p for p in args.photos.iterdir() if p.is_file()) if args.photos else example_photos()
    tmp = Path(tempfile.mkdtemp(prefix="bench-demo-"))
    model = args.model
    if model is None:
        model = tmp / "paper.safetensors"
        subprocess.run([sys.executable, "-m", "alexnet_kit", "init", str(model)], check=True, cwd=ROOT)
    print(f"machine: {describe('gradio')}; load average {os.getloadavg()[0]:.1f} at start (other processes share the CPU)")
    print(f"model: {model}; index: {args.index or 'none'}; {len(photos)} photos from {photos[0].parent}")
    print(f"load: {args.requests} requests, {args.concurrency} concurrent, {args.runs} runs (medians)", flush=True)

    endpoints = ["/classify"] + (["/similar"] if args.index else [])
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    log = tmp / "server.log"
    proc = start_server(model, args.index, port, log)
    service = DemoService.load(model, args.index)
    served: dict[str, list[dict]] = {e: [] for e in endpoints}
    direct: dict[str, list[dict]] = {e: [] for e in endpoints}
    try:
        wait_ready(url, proc, log)
        for e in endpoints:  # warm-up both paths
            load_run(url, e, photos, args.concurrency, args.concurrency)
            baseline_run(service, e, photos, len(photos))
        # Server and baseline take turns, run by run, so that drifting load
        # from other processes on the machine hits both alike; the idle one
        # (server or this process) uses no CPU meanwhile.
        for i in range(args.runs):
            for e in endpoints:
                served[e].append(load_run(url, e, photos, args.requests, args.concurrency))
                direct[e].append(baseline_run(service, e, photos, args.requests))
                s, d = served[e][-1], direct[e][-1]
                print(f"  run {i + 1}/{args.runs} {e}: server p50 {s['p50']:.3f} s {s['rps']:.2f} req/s; "
                      f"baseline p50 {d['p50']:.3f} s {d['rps']:.2f} req/s; load average {os.getloadavg()[0]:.1f}", flush=True)
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
        service.close()

    failed = 0
    print()
    print(f"{'endpoint':<10} {'path':<34} {'p50 s':>7} {'p95 s':>7} {'max s':>7} {'req/s':>7} {'errors':>6}")
    for e in endpoints:
        s, d = median_of(served[e]), median_of(direct[e])
        print(f"{e:<10} {f'server, {args.concurrency} concurrent':<34} {s['p50']:7.3f} {s['p95']:7.3f} {s['max']:7.3f} {s['rps']:7.2f} {s['errors']:6d}")
        print(f"{e:<10} {'baseline: in-process, sequential':<34} {d['p50']:7.3f} {d['p95']:7.3f} {d['max']:7.3f} {d['rps']:7.2f} {d['errors']:6d}")
        print(f"{e:<10} ratio server/baseline: p50 latency x{s['p50'] / d['p50']:.2f}, throughput x{s['rps'] / d['rps']:.2f}")
        for r in served[e]:
            for msg in r["errors"][:5]:
                print(f"  error: {msg}")
        failed += s["errors"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
