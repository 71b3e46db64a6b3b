"""Ten-crop classification throughput, photos/s, every backend in one run.

    .venv/bin/python benchmarks/bench_classify.py                    # paper network, 48 photos, 3 rounds
    .venv/bin/python benchmarks/bench_classify.py --photos 96 --rounds 5
    .venv/bin/python benchmarks/bench_classify.py --checkpoint runs/x/model.safetensors

Photos: ``../shared/data/imagenet-samples`` (real ImageNet JPEGs, original
sizes). Every path does the whole job of ``alexnet-kit classify``: decode,
resize to 256, ten crops (§4.1), forward, averaged softmax, top-5.

* naive baseline: one photo at a time, no threads: PIL -> ten crops -> eager model
* eager torch, TorchScript, ONNX fp32, ONNX int8: :class:`Classifier`
  (decoding in threads, overlapped with the model; 8 photos = 80 crops a pass)
* ceiling: the ONNX fp32 session alone on ready-made crops (same batch of 80),
  i.e. what end-to-end throughput would be if decoding and cropping cost nothing.

The paths run interleaved (round 1: every path, round 2: every path, ...)
and each figure is the median over rounds, because the CPU may be shared.
int8 agreement with fp32 is measured on ``--agree`` further photos
(ten-crop top-1 and top-5), and the number of distinct top-1 labels is
printed: with an untrained network nearly every photo gets the same label,
which makes agreement meaningless; pass a trained ``--checkpoint``.

Artifacts are exported (and verified) once into ``--workdir`` and reused.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from machine import describe  # noqa: E402  (benchmarks/machine.py)

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT.parent / "shared" / "data" / "imagenet-samples"




def ensure_artifacts(checkpoint: Path, workdir: Path, calibration: list[Path], kinds=("torchscript", "onnx", "int8")) -> dict[str, Path]:
    from alexnet_kit.export import export_checkpoint

    workdir.mkdir(parents=True, exist_ok=True)
    stamp = f"{checkpoint.stem}-{checkpoint.stat().st_size}-{int(checkpoint.stat().st_mtime)}"
    paths = {
        "torchscript": workdir / f"model-{stamp}.ts",
        "onnx": workdir / f"model-{stamp}.onnx",
        "int8": workdir / f"model-{stamp}.int8.onnx",
    }
    paths = {k: v for k, v in paths.items() if k in kinds}
    for kind, path in paths.items():
        if not path.exists():
            fmt = "onnx" if kind == "int8" else kind
            r = export_checkpoint(checkpoint, fmt, path, int8=kind == "int8", calibration=calibration if kind == "int8" else None, min_top1=0.0)
            print(f"  exported {kind}: {r.parity.summary()}", flush=True)
    return paths


def naive(model, preprocess, files: list[Path]) -> list[int]:
    """The baseline: one photo at a time, nothing overlapped."""
    from alexnet_kit.images import load_square
    from alexnet_kit.preprocess import average_crops

    out = []
    with torch.inference_mode():
        for f in files:
            x = preprocess.crops(load_square(f, preprocess.resize)[None], 10)
            out.append(int(average_crops(model(x), 10)[0].argmax()))
    return out


def classify(clf, files: list[Path]) -> list[int]:
    return [r.labels[0].index for r in clf.classify(files, top=5)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoint", type=Path, help="default: the paper's network, untrained (seed 0)")
    ap.add_argument("--photos", type=int, default=48, help="photos per path per round (default 48)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--agree", type=int, default=200, help="photos for the int8 vs fp32 agreement (default 200)")
    ap.add_argument("--batch", type=int, default=8, help="photos per forward pass (default 8 = 80 crops)")
    ap.add_argument("--workdir", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "alexnet-kit-bench")
    ap.add_argument("--agree-checkpoint", type=Path, nargs="*", default=[],
                    help="also measure int8 vs fp32 agreement for these (e.g. trained) checkpoints")
    ap.add_argument("--skip", nargs="*", default=[], help="paths to leave out, e.g. naive torchscript")
    args = ap.parse_args()

    from alexnet_kit.checkpoint import load_model
    from alexnet_kit.classify import Classifier
    from alexnet_kit.engines import load_engine
    from alexnet_kit.images import is_image_path

    if not SAMPLES.is_dir():
        sys.exit(f"needs {SAMPLES} (real ImageNet photos); see ../shared/data/README.md")
    files = sorted(p for p in SAMPLES.iterdir() if is_image_path(p))
    rng = np.random.default_rng(0)
    order = [files[i] for i in rng.permutation(len(files))]
    bench = order[: args.photos]
    calibration = order[args.photos : args.photos + 64]
    agree = order[args.photos + 64 : args.photos + 64 + args.agree]

    print("machine:", describe("onnxruntime"))
    checkpoint = args.checkpoint
    if checkpoint is None:
        checkpoint = args.workdir / "paper-untrained.safetensors"
        if not checkpoint.exists():
            from alexnet_kit.checkpoint import save_checkpoint
            from alexnet_kit.meta import ModelMeta, imagenet_classes
            from alexnet_kit.model import AlexNet, AlexNetConfig

            torch.manual_seed(0)
            wnids, names = imagenet_classes()
            args.workdir.mkdir(parents=True, exist_ok=True)
            save_checkpoint(checkpoint, AlexNet(AlexNetConfig()), ModelMeta(AlexNetConfig(), names, wnids, provenance={"bench": "untrained, seed 0"}))
    model, meta = load_model(checkpoint)
    print(f"model: {checkpoint} ({'trained' if meta.trained else 'UNTRAINED'}, {meta.config.num_classes} classes, "
          f"conv {meta.config.conv_channels}, fc {meta.config.fc_features})")
    print(f"photos: {len(bench)} from {SAMPLES}, {args.rounds} rounds interleaved, batch {args.batch} photos = {10 * args.batch} crops")
    artifacts = ensure_artifacts(checkpoint, args.workdir, calibration)

    clfs = {
        "eager torch": Classifier.load(checkpoint, batch_photos=args.batch),
        "torchscript": Classifier.load(artifacts["torchscript"], batch_photos=args.batch),
        "onnx fp32": Classifier.load(artifacts["onnx"], batch_photos=args.batch),
        "onnx int8": Classifier.load(artifacts["int8"], batch_photos=args.batch),
    }
    fp32_session = clfs["onnx fp32"].engine.session
    int8_session = clfs["onnx int8"].engine.session
    ready = meta.preprocess.crops(np.stack([__import__("alexnet_kit.images", fromlist=["x"]).load_square(f, 256) for f in bench[: args.batch]]), 10).numpy()

    def ceiling(session) -> float:
        """photos/s of the session alone on ready crops, as many passes as the photos need."""
        passes = max(1, len(bench) // args.batch)
        t = time.perf_counter()
        for _ in range(passes):
            session.run(None, {"input": ready})
        return passes * args.batch / (time.perf_counter() - t)

    paths = {
        "naive baseline (1 photo at a time, eager)": lambda: len(bench) / timed(lambda: naive(model, meta.preprocess, bench)),
        **{name: (lambda c=c: len(bench) / timed(lambda: classify(c, bench))) for name, c in clfs.items()},
        "ceiling: onnx fp32 forward only": lambda: ceiling(fp32_session),
        "ceiling: onnx int8 forward only": lambda: ceiling(int8_session),
    }
    paths = {k: v for k, v in paths.items() if not any(k.startswith(s) for s in args.skip)}
    for c in clfs.values():  # warm up: first-call allocations, graph optimisation
        classify(c, bench[: args.batch])
    rates: dict[str, list[float]] = {k: [] for k in paths}
    for r in range(args.rounds):
        for name, fn in paths.items():
            rates[name].append(fn())
        print(f"  round {r + 1}: " + ", ".join(f"{k.split(' (')[0]} {v[-1]:.2f}" for k, v in rates.items()), flush=True)
    med = {k: statistics.median(v) for k, v in rates.items()}

    print("\nten-crop photos/s (median of rounds; crops/s = 10x):")
    for k, v in med.items():
        print(f"  {k:<44} {v:7.2f}   {v * 10:7.1f} crops/s   runs {' '.join(f'{x:.2f}' for x in rates[k])}")
    base = med.get("naive baseline (1 photo at a time, eager)")
    fp32, int8 = med.get("onnx fp32"), med.get("onnx int8")
    ceil = med.get("ceiling: onnx fp32 forward only")
    print("\nratios:")
    if fp32 and ceil:
        print(f"  onnx fp32 end-to-end / its forward-only ceiling: {fp32 / ceil:.2f}x  (target >= 0.9)")
    if fp32 and base:
        print(f"  onnx fp32 / naive baseline:                      {fp32 / base:.2f}x  (target >= 2)")
    if fp32 and int8:
        print(f"  onnx int8 / onnx fp32:                           {int8 / fp32:.2f}x  (target >= 1.8)")
    if med.get("ceiling: onnx int8 forward only") and ceil:
        print(f"  int8 ceiling / fp32 ceiling:                     {med['ceiling: onnx int8 forward only'] / ceil:.2f}x")
    if "eager torch" in med and fp32:
        print(f"  onnx fp32 / eager torch:                         {fp32 / med['eager torch']:.2f}x")

    if args.agree:
        agreement(clfs["onnx fp32"].engine, clfs["onnx int8"].engine, meta, agree, "this model")
        for extra in args.agree_checkpoint:
            arts = ensure_artifacts(extra, args.workdir, calibration, kinds=("onnx", "int8"))
            from alexnet_kit.engines import load_engine

            extra_meta = load_model(extra)[1]
            agreement(load_engine(arts["onnx"]), load_engine(arts["int8"]), extra_meta, agree, str(extra))
    return 0


def agreement(fp32, int8, meta, files: list[Path], label: str) -> None:
    """Ten-crop top-1 / top-5 agreement of int8 with fp32 on real photos."""
    from alexnet_kit.export.verify import load_photos
    from alexnet_kit.preprocess import average_crops

    photos = load_photos(files, meta.preprocess.resize)
    tops = []
    for engine in (fp32, int8):
        probs = torch.cat([average_crops(engine.logits(meta.preprocess.crops(photos[i : i + 8], 10)), 10) for i in range(0, len(photos), 8)])
        tops.append(probs.topk(min(5, probs.shape[1]), dim=1).indices)
    a, b = tops
    top1 = float((a[:, 0] == b[:, 0]).float().mean())
    top5 = float(np.mean([len(set(x.tolist()) & set(y.tolist())) / a.shape[1] for x, y in zip(a, b)]))
    distinct = len(set(a[:, 0].tolist()))
    print(f"\nint8 vs fp32, {label} ({'trained' if meta.trained else 'UNTRAINED'}, {meta.config.num_classes} classes), "
          f"{len(photos)} imagenet-samples photos not used for calibration, ten-crop: top-1 agreement {top1:.1%}, "
          f"top-5 overlap {top5:.1%}; fp32 gives {distinct} distinct top-1 labels"
          + ("" if meta.trained else "  [untrained: agreement says little]"), flush=True)


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


if __name__ == "__main__":
    sys.exit(main())
