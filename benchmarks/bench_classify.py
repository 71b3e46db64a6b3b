"""Ten-crop classification at the CPU's limit: every engine and precision in one run.

    flock /tmp/alexnet-kit-bench.lock .venv/bin/python benchmarks/bench_classify.py
    .venv/bin/python benchmarks/bench_classify.py --photos 32 --rounds 3 --agree 200 \\
        --agree-checkpoint runs/caltech10/model.safetensors

Photos: ``../shared/data/imagenet-samples`` (real ImageNet JPEGs, original
sizes). Every timed path does the whole job of ``alexnet-kit classify``:
decode, resize to 256, ten crops (§4.1), forward, averaged softmax, top-5.

* naive baseline: one photo at a time, no threads: PIL -> ten crops -> eager model (fp32)
* onnxruntime fp32 / int8, OpenVINO fp32 / bf16 / int8: :class:`Classifier`
  on the engine ``choose`` selects for that choice (decoding in threads,
  overlapped with the model; 8 photos = 80 crops a pass)
* auto: what ``alexnet-kit classify`` picks by default: the fastest path
  passing the precision gate, measured once for this model and CPU
* forward-only ceilings of onnxruntime fp32 and of auto's engine on ready
  crops, and the CPU's measured GEMM rate in fp32 and bf16 (torch matmul),
  converted into crops/s at 1.45 GFLOP a crop: the limit.

The paths run interleaved (round 1: every path, round 2: ...) and each figure
is the median over rounds, because the CPU may be shared. Agreement with fp32
(ten-crop top-1, fc7 cosine) is measured on ``--agree`` further photos with a
trained model (``--agree-checkpoint``; an untrained network gives nearly one
label for every photo, which makes agreement meaningless). Index build
throughput compares auto with onnxruntime fp32 on ``--index-photos`` photos.
Artifacts are exported (and verified) once into ``--workdir`` and reused.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from machine import describe  # noqa: E402  (benchmarks/machine.py)

ROOT = Path(__file__).resolve().parents[1]
GFLOP_PER_CROP = 1.45  # 724M multiply-adds of the paper's network at 224x224 (DESIGN.md)
NAIVE = "naive baseline (1 photo at a time, eager fp32)"
PATHS = (("onnxruntime", "fp32"), ("onnxruntime", "int8"), ("openvino", "fp32"), ("openvino", "bf16"), ("openvino", "int8"))


def ensure_artifacts(checkpoint: Path, workdir: Path, calibration: list[Path]) -> dict[str, Path]:
    """model.onnx and model.int8.onnx side by side (the int8 sibling is what --precision int8 runs)."""
    from alexnet_kit.export import export_checkpoint

    folder = workdir / f"{checkpoint.stem}-{checkpoint.stat().st_size}-{int(checkpoint.stat().st_mtime)}"
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"onnx": folder / "model.onnx", "int8": folder / "model.int8.onnx"}
    for kind, path in paths.items():
        if not path.exists():
            r = export_checkpoint(checkpoint, "onnx", path, int8=kind == "int8",
                                  calibration=calibration if kind == "int8" else None, min_top1=0.0)
            print(f"  exported {kind}: {r.parity.summary()}", flush=True)
    return paths


def paper_checkpoint(workdir: Path) -> Path:
    path = workdir / "paper-untrained.safetensors"
    if not path.exists():
        from alexnet_kit.checkpoint import save_checkpoint
        from alexnet_kit.meta import ModelMeta, imagenet_classes
        from alexnet_kit.model import AlexNet, AlexNetConfig

        torch.manual_seed(0)
        wnids, names = imagenet_classes()
        workdir.mkdir(parents=True, exist_ok=True)
        save_checkpoint(path, AlexNet(AlexNetConfig()), ModelMeta(AlexNetConfig(), names, wnids, provenance={"bench": "untrained, seed 0"}))
    return path


def naive(model, preprocess, files: list[Path]) -> list[int]:
    """The baseline: one photo at a time, nothing overlapped."""
    from alexnet_kit.metrics import average_crops

    out = []
    with torch.inference_mode():
        for f in files:
            x = preprocess.crops(preprocess.load(f)[None], 10)
            out.append(int(average_crops(model(x), 10)[0].argmax()))
    return out


def classify(clf, files: list[Path]) -> list[int]:
    return [r.labels[0].index for r in clf.classify(files, top=5)]


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def gemm_rate(dtype: torch.dtype, n: int = 2048, runs: int = 3) -> float:
    """GFLOP/s (GOP/s for int8) of an n x n matmul in ``dtype`` on this CPU (oneDNN), best of ``runs``."""
    if dtype == torch.int8:
        a = torch.randint(-128, 127, (n, n), dtype=torch.int8)
        mm = lambda: torch._int_mm(a, a)  # noqa: E731  (VNNI where the CPU has it)
    else:
        a = torch.randn(n, n).to(dtype)
        mm = lambda: torch.mm(a, a)  # noqa: E731
    mm()
    best = min(timed(mm) for _ in range(runs))
    return 2 * n**3 / best / 1e9


def limits() -> dict:
    """The CPU's matmul rate per precision, as ten-crop photos/s at 1.45 GFLOP a crop."""
    out = {"limit: fp32 matmul": lambda: gemm_rate(torch.float32) / GFLOP_PER_CROP / 10,
           "limit: bf16 matmul": lambda: gemm_rate(torch.bfloat16) / GFLOP_PER_CROP / 10}
    try:
        torch._int_mm(torch.ones(32, 32, dtype=torch.int8), torch.ones(32, 32, dtype=torch.int8))
        out["limit: int8 matmul"] = lambda: gemm_rate(torch.int8) / GFLOP_PER_CROP / 10
    except (RuntimeError, AttributeError):  # an older torch without a CPU int8 matmul
        pass
    return out


def open_paths(onnx: Path, batch: int, log=None) -> dict[str, object]:
    """{name: engine} for every engine/precision this machine runs, plus auto."""
    from alexnet_kit.engines import choose, cpu
    from alexnet_kit.engines.loaders import open_path
    from alexnet_kit.engines.precision import Precision

    engines = {}
    for engine, precision in PATHS:
        if precision == "bf16" and not cpu.native_bf16():
            print(f"  {engine} {precision}: skipped (no amx_bf16/avx512_bf16 on this CPU)")
            continue
        # the gate is bypassed here on purpose: every path is timed; agreement is measured below
        path = onnx if precision != "int8" else onnx.with_name(onnx.stem + ".int8.onnx")
        engines[f"{engine} {precision}"] = open_path(engine, Precision(precision), path, batch=batch)
    t = time.perf_counter()
    auto = choose(onnx, "auto", "auto", batch=batch, log=log)
    engines["auto"] = auto.open()
    print(f"  auto: {auto.reason}  (choosing took {time.perf_counter() - t:.1f} s, once per model and CPU)")
    return engines


def agreement(onnx: Path, meta, files: list[Path], batch: int = 8) -> None:
    """Ten-crop top-1 agreement and fc7 cosine of every path against onnxruntime fp32."""
    from alexnet_kit.export.verify import load_photos
    from alexnet_kit.metrics import average_crops

    engines = open_paths(onnx, batch * 10)
    photos = load_photos(files, meta.preprocess.resize, meta.preprocess.resize_mode)
    outs = {}
    for name, engine in engines.items():
        probs, feats = [], []
        for i in range(0, len(photos), batch):
            logits, f = engine.logits_and_features(meta.preprocess.crops(photos[i : i + batch], 10))
            probs.append(average_crops(logits, 10))
            feats.append(f)
        outs[name] = torch.cat(probs), torch.cat(feats)
    ref_p, ref_f = outs["onnxruntime fp32"]
    distinct = len(set(ref_p.argmax(1).tolist()))
    print(f"\nagreement with onnxruntime fp32, {meta.config.num_classes}-class {'trained' if meta.trained else 'UNTRAINED'} "
          f"model, {len(photos)} photos x 10 crops (fp32 gives {distinct} distinct top-1 labels):")
    for name, (p, f) in outs.items():
        top1 = float((p.argmax(1) == ref_p.argmax(1)).double().mean())
        cos = torch.nn.functional.cosine_similarity(f.double(), ref_f.double(), dim=1, eps=1e-12)
        print(f"  {name:<20} top-1 agreement {top1:7.2%}  fc7 cosine mean {float(cos.mean()):.5f} min {float(cos.min()):.5f}"
              + (f"   [{engines[name].selection.reason.split(';')[0]}]" if name == "auto" else ""), flush=True)


def index_build(onnx: Path, files: list[Path], workdir: Path, rounds: int) -> None:
    """Index build photos/s (centre crop, 64 a pass) with auto against onnxruntime fp32, interleaved."""
    from alexnet_kit.engines import choose
    from alexnet_kit.features import FeatureExtractor
    from alexnet_kit.search import builder

    extractors = {
        "onnxruntime fp32": FeatureExtractor(choose(onnx, "onnxruntime", "fp32", batch=64), crops=1),
        "auto": FeatureExtractor(choose(onnx, "auto", "auto", batch=64), crops=1),
    }
    print(f"\nindex build, {len(files)} photos, centre crop, 64 a pass; auto: {extractors['auto'].selection.reason.split(';')[0]}")
    for fx in extractors.values():  # warm up: first-call allocations, OpenVINO's first inference
        list(fx.extract(files[:8]))
    rates: dict[str, list[float]] = {k: [] for k in extractors}
    for r in range(rounds):
        for name, fx in extractors.items():
            out = workdir / f"index-{name.replace(' ', '-')}"
            shutil.rmtree(out, ignore_errors=True)
            report = builder.build([str(f) for f in files], out, onnx, extractor=fx)
            rates[name].append(report.extracted / report.seconds)
        print(f"  round {r + 1}: " + ", ".join(f"{k} {v[-1]:.2f}" for k, v in rates.items()), flush=True)
    med = {k: statistics.median(v) for k, v in rates.items()}
    for k, v in med.items():
        print(f"  {k:<20} {v:7.2f} photos/s   runs {' '.join(f'{x:.2f}' for x in rates[k])}")
    print(f"  auto / onnxruntime fp32: {med['auto'] / med['onnxruntime fp32']:.2f}x")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoint", type=Path, help="model timed (default: the paper's network, untrained, seed 0)")
    ap.add_argument("--agree-checkpoint", type=Path, default=ROOT / "runs" / "caltech10" / "model.safetensors",
                    help="trained model for the agreement figures (default runs/caltech10/model.safetensors)")
    ap.add_argument("--photos", type=int, default=32, help="photos per path per round (default 32)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--agree", type=int, default=200, help="photos for agreement with fp32 (default 200)")
    ap.add_argument("--index-photos", type=int, default=64, help="photos for the index build comparison (0: skip)")
    ap.add_argument("--batch", type=int, default=8, help="photos per forward pass (default 8 = 80 crops)")
    ap.add_argument("--workdir", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "alexnet-kit-bench")
    args = ap.parse_args()

    from alexnet_kit.checkpoint import load_model
    from alexnet_kit.classify import Classifier
    from alexnet_kit.engines import cpu
    from alexnet_kit.images import is_image_path
    from alexnet_kit.paths import shared_data

    samples = shared_data("imagenet-samples")  # real ImageNet photos; a one-line error says how to supply them
    files = sorted(p for p in samples.iterdir() if is_image_path(p))
    order = [files[i] for i in np.random.default_rng(0).permutation(len(files))]
    bench = order[: args.photos]
    calibration = order[args.photos : args.photos + 64]
    agree = order[args.photos + 64 : args.photos + 64 + args.agree]
    indexed = order[args.photos + 64 + args.agree : args.photos + 64 + args.agree + args.index_photos]

    print("machine:", describe("onnxruntime", "openvino"))
    print("CPU:", cpu.describe(), "| native bf16:", "yes" if cpu.native_bf16() else "no",
          "| cores this process may use:", len(os.sched_getaffinity(0)))
    checkpoint = args.checkpoint or paper_checkpoint(args.workdir)
    model, meta = load_model(checkpoint)
    print(f"model timed: {checkpoint} ({'trained' if meta.trained else 'UNTRAINED'}, {meta.config.num_classes} classes, "
          f"conv {meta.config.conv_channels}, fc {meta.config.fc_features})")
    print(f"photos: {len(bench)} from {samples}, {args.rounds} rounds interleaved, batch {args.batch} photos = {10 * args.batch} crops")
    arts = ensure_artifacts(checkpoint, args.workdir, calibration)
    engines = open_paths(arts["onnx"], 10 * args.batch, log=lambda s: print("  " + s, flush=True))
    clfs = {name: Classifier(e, crops=10, batch_photos=args.batch) for name, e in engines.items()}
    for name, e in engines.items():
        print(f"  {name:<18} runs: {e.description}")
    ready = meta.preprocess.crops(np.stack([meta.preprocess.load(f) for f in bench[: args.batch]]), 10)

    def ceiling(engine) -> float:
        passes = max(1, len(bench) // args.batch)
        return passes * args.batch / timed(lambda: [engine.logits(ready) for _ in range(passes)])

    paths = {
        NAIVE: lambda: len(bench) / timed(lambda: naive(model, meta.preprocess, bench)),
        **{name: (lambda c=c: len(bench) / timed(lambda: classify(c, bench))) for name, c in clfs.items()},
        "ceiling: onnxruntime fp32 forward only": lambda: ceiling(engines["onnxruntime fp32"]),
        "ceiling: auto forward only": lambda: ceiling(engines["auto"]),
        **limits(),
    }
    for c in clfs.values():  # warm up: first-call allocations, graph optimisation
        classify(c, bench[: args.batch])
    rates: dict[str, list[float]] = {k: [] for k in paths}
    for r in range(args.rounds):
        for name, fn in paths.items():
            rates[name].append(fn())
        print(f"  round {r + 1}: " + ", ".join(f"{k.split(' (')[0]} {v[-1]:.2f}" for k, v in rates.items()), flush=True)
    med = {k: statistics.median(v) for k, v in rates.items()}
    base = med[NAIVE]

    print(f"\nten-crop photos/s end to end (median of {args.rounds} rounds; crops/s = 10x); ratio to naive:")
    for k, v in med.items():
        print(f"  {k:<42} {v:7.2f}  {v * 10:7.1f} crops/s  {v / base:5.2f}x naive   runs {' '.join(f'{x:.2f}' for x in rates[k])}")
    best_single = max((k for k in clfs if k != "auto"), key=lambda k: med[k])
    same = engines["auto"].description == engines[best_single].description
    print(f"\n  best single path: {best_single} {med[best_single]:.2f} photos/s; auto {med['auto']:.2f} "
          f"({med['auto'] / med[best_single]:.2f}x of it; target on a CPU without AMX: never slower); auto runs "
          + ("the same engine and precision" if same else "another path: " + engines["auto"].description))

    print(f"\nthe limit: a 2048^3 matmul (torch, oneDNN) in each precision, as ten-crop photos/s at {GFLOP_PER_CROP} GFLOP a crop:")
    for k in (k for k in med if k.startswith("limit: ")):
        prec = k.split()[1]
        print(f"  {prec}: {med[k] * GFLOP_PER_CROP * 10:.0f} G(FL)OP/s = {med[k]:.1f} photos/s; the fastest {prec} path reaches "
              + ", ".join(f"{n} {med[n] / med[k]:.2f}" for n in clfs if n.endswith(prec)) + " of it")

    if args.agree:
        if args.agree_checkpoint and args.agree_checkpoint.exists():
            trained_arts = ensure_artifacts(args.agree_checkpoint, args.workdir, calibration)
            agreement(trained_arts["onnx"], load_model(args.agree_checkpoint)[1], agree, args.batch)
        else:
            print(f"\nno trained model at {args.agree_checkpoint}: agreement measured on the timed model only")
        # the untrained network gives one label for nearly every photo: a few photos show that, no more
        agreement(arts["onnx"], meta, agree[:40], args.batch)
    if args.index_photos:
        index_build(arts["onnx"], indexed, args.workdir, max(2, args.rounds - 1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
