"""Pretrained imports: conversion time per format, and ten-crop speed of the Caffe-shaped model.

    flock /tmp/alexnet-kit-bench.lock .venv/bin/python benchmarks/bench_pretrained.py
    .venv/bin/python benchmarks/bench_pretrained.py --rounds 3 --photos 24

1. Conversion (``alexnet-kit pretrained NAME --file F``: digest, parse, check,
   write the checkpoint) on files of the real size with random values
   (bvlc_alexnet V1 caffemodel 244 MB, torchvision state dict 244 MB, zoo
   ONNX 244 MB), next to a baseline that only *loads* the same file with the
   format's own reader (OpenCV's readNetFromCaffe, torch.load, onnx.load).
2. Ten-crop classification, photos/s, ``Classifier`` on the eager torch
   engine (decode threads, 8 photos = 80 crops a pass), the imported Caffe
   architecture (227 crops of warped photos, LRN across all maps, k=1) next
   to the paper's (224 crops, LRN within each tower), interleaved rounds,
   medians. Photos: ``../shared/data/imagenet-samples`` (real ImageNet JPEGs).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from machine import describe  # noqa: E402  (benchmarks/machine.py)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the test helpers that write the published formats


def make_files(work: Path) -> dict[str, Path]:
    from pretrained_files import caffe_weights, torchvision_state, zoo_onnx

    from alexnet_kit.model import AlexNet
    from alexnet_kit.pretrained.caffe import write_caffemodel
    from alexnet_kit.pretrained.registry import SOURCES

    torch.manual_seed(0)
    files = {}
    caffe_state = AlexNet(SOURCES["caffe"].config).state_dict()
    files["caffe"] = work / "bvlc_alexnet.caffemodel"
    write_caffemodel(files["caffe"], caffe_weights(caffe_state), "v1")
    files["onnx-zoo"] = work / "bvlcalexnet-12.onnx"
    zoo_onnx(caffe_state, files["onnx-zoo"])
    files["torchvision"] = work / "alexnet-owt-7be5be79.pth"
    torch.save(torchvision_state(AlexNet(SOURCES["torchvision"].config).state_dict()), files["torchvision"])
    return files


def baseline_load(name: str, path: Path, work: Path) -> None:
    if name == "caffe":
        import cv2
        from pretrained_files import deploy_prototxt

        proto = work / "deploy.prototxt"
        proto.write_text(deploy_prototxt(227))
        cv2.dnn.readNetFromCaffe(str(proto), str(path))
    elif name == "torchvision":
        torch.load(path, map_location="cpu", weights_only=True)
    else:
        import onnx

        onnx.load(str(path))


def bench_conversion(work: Path, rounds: int) -> None:
    from alexnet_kit.pretrained import convert

    files = make_files(work)
    times: dict[str, list[float]] = {n: [] for n in files}
    base: dict[str, list[float]] = {n: [] for n in files}
    for _ in range(rounds):
        for name, path in files.items():  # interleaved
            t = time.perf_counter()
            convert(name, path, work / f"{name}.safetensors", digest_check=False)
            times[name].append(time.perf_counter() - t)
            t = time.perf_counter()
            baseline_load(name, path, work)
            base[name].append(time.perf_counter() - t)
    print("\nconversion (median of %d rounds; file -> checkpoint incl. digest, checks, atomic write)" % rounds)
    print(f"{'source':12s} {'file MB':>8s} {'convert s':>10s} {'reader load s':>14s} {'ratio':>6s}")
    for name, path in files.items():
        c, b = statistics.median(times[name]), statistics.median(base[name])
        print(f"{name:12s} {path.stat().st_size / 1e6:8.1f} {c:10.2f} {b:14.2f} {c / b:6.2f}")


def photo_files(n: int) -> list[Path]:
    from alexnet_kit.paths import example_photos, optional_shared

    shared = optional_shared("imagenet-samples")
    files = sorted(shared.glob("*.JPEG")) if shared else example_photos()
    return (files * (n // max(1, len(files)) + 1))[:n] if len(files) < n else files[:: max(1, len(files) // n)][:n]


def bench_classify(work: Path, rounds: int, n: int) -> None:
    import dataclasses

    from alexnet_kit.checkpoint import save_checkpoint
    from alexnet_kit.classify import Classifier
    from alexnet_kit.engines.torch_checkpoint import TorchCheckpointEngine
    from alexnet_kit.meta import ModelMeta, imagenet_classes
    from alexnet_kit.model import AlexNet, AlexNetConfig
    from alexnet_kit.pretrained.registry import SOURCES

    wnids, names = imagenet_classes()
    paper = work / "paper.safetensors"
    save_checkpoint(paper, AlexNet(AlexNetConfig()), ModelMeta(AlexNetConfig(), names, wnids))
    models = {"paper (224, LRN per tower)": paper, "caffe (227, LRN across maps)": work / "caffe.safetensors"}
    if not models["caffe (227, LRN across maps)"].exists():
        src = SOURCES["caffe"]
        save_checkpoint(models["caffe (227, LRN across maps)"], AlexNet(src.config),
                        ModelMeta(dataclasses.replace(src.config), names, wnids, preprocess=src.preprocess()))
    photos = [str(p) for p in photo_files(n)]
    clfs = {k: Classifier(TorchCheckpointEngine(p), crops=10) for k, p in models.items()}
    for clf in clfs.values():  # warm-up
        list(clf.classify(photos[:8]))
    rates: dict[str, list[float]] = {k: [] for k in clfs}
    for _ in range(rounds):
        for k, clf in clfs.items():
            t = time.perf_counter()
            out = list(clf.classify(photos, top=5))
            rates[k].append(len(out) / (time.perf_counter() - t))
    print(f"\nten-crop classify, eager torch fp32, {len(photos)} photos, median of {rounds} interleaved rounds")
    med = {k: statistics.median(v) for k, v in rates.items()}
    for k, v in med.items():
        print(f"{k:30s} {v:6.2f} photos/s   (rounds: {', '.join(f'{r:.2f}' for r in rates[k])})")
    a, b = med.values()
    print(f"caffe / paper: {b / a:.2f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--photos", type=int, default=24)
    ap.add_argument("--skip-conversion", action="store_true")
    args = ap.parse_args()
    print(describe("onnx", "cv2"))
    print("date", time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
    with tempfile.TemporaryDirectory(prefix="bench-pretrained-") as d:
        work = Path(d)
        if not args.skip_conversion:
            bench_conversion(work, args.rounds)
        bench_classify(work, args.rounds, args.photos)


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
