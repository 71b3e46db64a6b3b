"""Explanation maps: how faithful each method is, how fast on the paper's network against Captum's defaults, and the units pass.

    flock /tmp/alexnet-kit-bench.lock .venv/bin/python benchmarks/bench_explain.py --part all
    .venv/bin/python benchmarks/bench_explain.py --part deletion --photos 250
    .venv/bin/python benchmarks/bench_explain.py --part speed --speed-photos 4 --repeats 3
    .venv/bin/python benchmarks/bench_explain.py --part units --units-photos 5000
    .venv/bin/python benchmarks/bench_explain.py --part gradcam-package   # needs /tmp/gradcam-site, see below

Parts (``all`` runs the first three):

* ``deletion``: faithfulness by the deletion metric (Petsiuk et al. 2018,
  RISE) with the trained quickstart model (``runs/quickstart/model.safetensors``,
  5 Caltech-101 classes; ``make quickstart`` writes it) on real Caltech-101
  photos of those classes that it never trained on (every file name in
  ``examples/quickstart-data/<class>/`` is left out), balanced as far as the
  classes allow, fixed seed. For each photo: the most probable class on the
  central crop (``Explainer.explain(photo, top=1)``), the map of every method
  (torch fp32 forward passes, so all methods see the same numbers), the crop's
  pixels ordered by the map, most salient first (ties broken at random, fixed
  seed), deleted in ``--steps`` equal steps (set to 0, the mean image, in all 3
  channels) and the class's softmax probability after each step (the
  ``steps + 1`` crops of a photo in one engine call); the area under that curve
  (trapezoid, x from 0 to 1) is the deletion AUC: lower = more faithful. A
  random order on the same photos is the baseline row.
* ``speed``: seconds a photo on the paper's network (``AlexNetConfig()``,
  60,965,224 parameters, random init, seed 0), 2 CPU threads, real photos from
  ``../shared/data/photos``: every method as the Explainer runs it (load, crop,
  class probabilities, map) against the same work with Captum's own defaults
  (occlusion: ``perturbations_per_eval=1``; integrated gradients: ``n_steps=50,
  internal_batch_size=None``); occlusion's per-eval batch 8/16/32/64; occlusion
  on the engine ``auto`` picks for the checkpoint and for its ONNX export.
* ``units``: ``alexnet-kit index build`` over ``--units-photos`` Caltech-101
  photos (symlinked into a temp folder), then ``alexnet-kit units`` (first
  call: the batched pass storing every conv5 unit's maxima; later calls: the
  stored table; ``--units all``), timed as subprocesses.
* ``gradcam-package``: a one-off check of jacobgil's ``grad-cam`` package
  (``pytorch_grad_cam.GradCAM`` on ``model.act5``, ``ClassifierOutputTarget``)
  against Captum ``LayerGradCam`` + bilinear upsampling (our ``gradcam``):
  Pearson correlation of the maps and time a photo. Install it outside the
  project: ``.venv/bin/pip install --no-deps --target /tmp/gradcam-site grad-cam ttach``.

Every timed pair runs interleaved in one process (round 1: every path, round
2: ...) and each figure is the median over rounds, because the CPU may be shared.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from machine import describe  # noqa: E402  (benchmarks/machine.py)

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART_MODEL = ROOT / "runs" / "quickstart" / "model.safetensors"
QUICKSTART_DATA = ROOT / "examples" / "quickstart-data"
QUICKSTART_CLASSES = ("Faces_easy", "Leopards", "Motorbikes", "airplanes", "watch")
GRADCAM_SITE = Path("/tmp/gradcam-site")
GOAL_S = 2.0  # the default method's budget: seconds a photo on the paper's network, 2 cores


def say(*a) -> None:
    print(*a, flush=True)


def median_runs(runs: list[float]) -> str:
    return " ".join(f"{r:.3f}" for r in runs)


# -- the photos ---------------------------------------------------------------


def deletion_photos(n: int, seed: int) -> list[tuple[str, Path]] | None:
    """(class folder, path) of up to ``n`` Caltech-101 photos of the quickstart classes not in its training
    data, as balanced as the classes allow (each class gets an equal share; a small class's leftover share
    goes to the others), in a fixed random order; None when the shared data is absent."""
    from alexnet_kit.images import is_image_path
    from alexnet_kit.paths import optional_shared

    root = optional_shared("caltech101")
    if root is None:
        return None
    rng = np.random.default_rng(seed)
    avail = {}
    for c in QUICKSTART_CLASSES:
        trained = {p.name for p in (QUICKSTART_DATA / c).iterdir()}
        files = sorted(p for p in (root / c).iterdir() if is_image_path(p) and p.name not in trained)
        avail[c] = [files[i] for i in rng.permutation(len(files))]
    quota, left = {}, n
    for k, c in enumerate(sorted(avail, key=lambda c: len(avail[c]))):  # water-filling, smallest class first
        share = left // (len(avail) - k)
        quota[c] = min(len(avail[c]), share)
        left -= quota[c]
    rest = [c for c in avail if quota[c] < len(avail[c])]  # hand out what integer division left over
    while left > 0 and rest:
        for c in list(rest):
            if left and quota[c] < len(avail[c]):
                quota[c] += 1
                left -= 1
            if quota[c] == len(avail[c]):
                rest.remove(c)
    picked = [(c, p) for c in QUICKSTART_CLASSES for p in avail[c][: quota[c]]]
    return [picked[i] for i in rng.permutation(len(picked))]


def demo_photos(n: int) -> list[Path] | None:
    from alexnet_kit.images import is_image_path
    from alexnet_kit.paths import optional_shared

    root = optional_shared("photos")
    if root is None:
        return None
    files = sorted(p for p in root.iterdir() if is_image_path(p))
    return [files[i] for i in sorted(np.random.default_rng(0).permutation(len(files))[:n])]


def paper_checkpoint(workdir: Path) -> Path:
    """The paper's network, random init (seed 0), ImageNet's class names: what tests/helpers.make_checkpoint
    writes (and the same file as bench_classify.py's in the same --workdir)."""
    path = workdir / "paper-untrained.safetensors"
    if not path.exists():
        from alexnet_kit.checkpoint import save_checkpoint
        from alexnet_kit.meta import ModelMeta, imagenet_classes
        from alexnet_kit.model import AlexNet, AlexNetConfig

        torch.manual_seed(0)
        wnids, names = imagenet_classes()
        workdir.mkdir(parents=True, exist_ok=True)
        save_checkpoint(path, AlexNet(AlexNetConfig()),
                        ModelMeta(AlexNetConfig(), names, wnids, provenance={"bench": "untrained, seed 0"}))
    return path


# -- 1. faithfulness: the deletion metric ------------------------------------------


def salience_order(heat: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Flat pixel indices, most salient first, ties in a random order."""
    return np.lexsort((rng.random(heat.size), -heat.ravel().astype(np.float64)))


def deletion_curve(engine, x: torch.Tensor, c: int, order: np.ndarray, steps: int) -> np.ndarray:
    """The class ``c``'s softmax probability as the pixels of ``order`` are set to 0 (the mean image) in
    ``steps`` equal steps: ``steps + 1`` values, all crops in one engine call."""
    _, ch, h, w = x.shape
    rank = np.empty(h * w, np.int64)
    rank[order] = np.arange(h * w)
    counts = np.rint(np.linspace(0, h * w, steps + 1)).astype(np.int64)
    keep = torch.from_numpy(rank[None, :] >= counts[:, None]).reshape(steps + 1, 1, h, w)
    batch = x.expand(steps + 1, ch, h, w) * keep
    return torch.softmax(engine.logits(batch).float(), 1)[:, c].numpy()


def auc(curve: np.ndarray) -> float:
    return float(np.trapezoid(curve, dx=1.0 / (len(curve) - 1)))


def bootstrap_ci(values: np.ndarray, rng: np.random.Generator, n: int = 2000) -> tuple[float, float]:
    idx = rng.integers(0, len(values), (n, len(values)))
    means = values[idx].mean(1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def part_deletion(args) -> None:
    from alexnet_kit.engines import choose
    from alexnet_kit.explain import DEFAULT_METHOD, METHODS, Explainer

    say("\n## 1. faithfulness: deletion metric")
    if not args.model.exists():
        say(f"skipped: no trained model at {args.model} (run `make quickstart` first)")
        return
    photos = deletion_photos(args.photos, args.seed)
    if photos is None:
        say("skipped: the shared data (../shared/data/caltech101) is absent; set ALEXNET_KIT_SHARED_DATA")
        return
    counts = {c: sum(1 for k, _ in photos if k == c) for c in QUICKSTART_CLASSES}
    say(f"model: {args.model}; photos: {len(photos)} Caltech-101 photos not in examples/quickstart-data "
        f"({', '.join(f'{c} {n}' for c, n in counts.items())}), seed {args.seed}; {args.steps} deletion steps "
        f"of {224 * 224 // args.steps} pixels; torch fp32")
    selection = choose(args.model, "torch", "fp32", batch=64)
    engine = selection.open()
    explainers = {m: Explainer(engine, m) for m in args.methods or METHODS}
    for steps in args.ig_steps:  # integrated gradients with other numbers of steps, as extra rows
        explainers[f"integrated-gradients, {steps} steps"] = Explainer(engine, "integrated-gradients", ig_steps=steps)
    meta = engine.meta
    rows = list(explainers) + ["random"]
    aucs = {m: [] for m in rows}
    secs = {m: [] for m in explainers}
    first_prob, correct = [], 0
    rng = np.random.default_rng(args.seed)
    for c, p in photos[:1]:  # warm up: first-call allocations, Captum's imports
        for ex in explainers.values():
            ex.explain(p, top=1)
    t0 = time.perf_counter()
    for i, (folder, p) in enumerate(photos):
        x = meta.preprocess.crops(meta.preprocess.load(p)[None], 1)
        cls = None
        for m, ex in explainers.items():
            t = time.perf_counter()
            e, = ex.explain(p, top=1)
            secs[m].append(time.perf_counter() - t)
            if cls is None:
                cls, prob = e.class_index, e.score
            assert e.class_index == cls, (p, m, e.class_index, cls)  # one engine: one top class for every method
            aucs[m].append(auc(deletion_curve(engine, x, cls, salience_order(e.heat, rng), args.steps)))
        aucs["random"].append(auc(deletion_curve(engine, x, cls, rng.permutation(x.shape[-1] * x.shape[-2]), args.steps)))
        first_prob.append(prob)
        correct += meta.classes[cls] == folder
        if (i + 1) % 25 == 0 or i + 1 == len(photos):
            say(f"  {i + 1}/{len(photos)} photos, {time.perf_counter() - t0:.0f} s: "
                + ", ".join(f"{m} {np.mean(v):.4f}" for m, v in aucs.items()))

    base = float(np.mean(aucs["random"]))
    stats = {}
    brng = np.random.default_rng(args.seed + 1)
    for m in rows:
        v = np.asarray(aucs[m])
        stats[m] = {"mean": float(v.mean()), "ci": bootstrap_ci(v, brng), "se": float(v.std(ddof=1) / np.sqrt(len(v))),
                    "vs_random": float(v.mean()) / base, "wins": float(np.mean(v < np.asarray(aucs["random"]))),
                    "s": float(np.mean(secs[m])) if m in secs else None}
    order = sorted(rows, key=lambda m: stats[m]["mean"])
    say(f"\ntop-1 on these photos: {correct}/{len(photos)} = {correct / len(photos):.1%}; the explained class's "
        f"probability on the intact crop: mean {np.mean(first_prob):.3f}, median {np.median(first_prob):.3f}")
    say("\n| rank | method | deletion AUC (mean) | 95% bootstrap CI | AUC / random | beats random on | s/photo (quickstart model) |")
    say("| ---: | --- | ---: | --- | ---: | ---: | ---: |")
    for k, m in enumerate(order, 1):
        s = stats[m]
        name = f"{m} (default)" if m == DEFAULT_METHOD else m
        say(f"| {k} | {name} | {s['mean']:.4f} | {s['ci'][0]:.4f} to {s['ci'][1]:.4f} | {s['vs_random']:.2f} | "
            + (f"{s['wins']:.0%} | " if m != "random" else "- | ") + (f"{s['s']:.3f} |" if s["s"] is not None else "- |"))
    ranked = [m for m in order if m in METHODS]
    pairs = [(ranked[0], ranked[1])] if len(ranked) > 1 else []
    pairs += [(f"integrated-gradients, {s} steps", "integrated-gradients") for s in args.ig_steps if "integrated-gradients" in aucs]
    for a, b in pairs:
        diff = np.asarray(aucs[a]) - np.asarray(aucs[b])
        lo, hi = bootstrap_ci(diff, brng)
        say(f"\npaired difference {a} - {b}: {diff.mean():+.4f} (95% CI {lo:+.4f} to {hi:+.4f}"
            f"{', excludes 0' if hi < 0 or lo > 0 else ', includes 0: not separable on these photos'})")
    say(f"most faithful: {ranked[0]}" if ranked else "")
    args.workdir.mkdir(parents=True, exist_ok=True)
    tag = "".join(f"-{m}" for m in args.methods or []) + "".join(f"-ig{k}" for k in args.ig_steps)
    out = args.workdir / f"deletion{tag}-{len(photos)}.json"
    out.write_text(json.dumps({"photos": [str(p) for _, p in photos], "auc": aucs, "seconds": secs,
                               "first_prob": first_prob, "steps": args.steps, "seed": args.seed}))
    say(f"per-photo AUCs and times: {out}")


# -- 2. speed on the paper's network ---------------------------------------------


class _Logit(torch.nn.Module):
    """The model's logit of one class, as a column: what Captum attributes (target=0)."""

    def __init__(self, model, c: int):
        super().__init__()
        self.model, self.c = model, c

    def forward(self, x):
        return self.model(x)[:, self.c : self.c + 1]


def captum_default(engine, gmodel, method: str, photo: Path) -> np.ndarray:
    """The Explainer's work for one photo (load, crop, class probabilities, top class) with the Captum call
    at Captum's own defaults: Occlusion(perturbations_per_eval=1), IntegratedGradients(n_steps=50,
    internal_batch_size=None). Same window, stride, baseline and score as ours."""
    from captum.attr import IntegratedGradients, Occlusion

    from alexnet_kit.explain import methods as M

    meta = engine.meta
    x = meta.preprocess.crops(meta.preprocess.load(photo)[None], 1)
    probs = torch.softmax(engine.logits(x).float(), 1)[0]
    c = int(probs.argmax())
    with M.quiet_captum():
        if method == "occlusion":
            fwd = lambda t: torch.softmax(engine.logits(t).float(), 1)[:, c : c + 1]  # noqa: E731
            attr = Occlusion(fwd).attribute(x, sliding_window_shapes=(3, M.OCCLUSION_WINDOW, M.OCCLUSION_WINDOW),
                                            strides=(3, M.OCCLUSION_STRIDE, M.OCCLUSION_STRIDE), baselines=0.0, target=0)
        else:
            attr = IntegratedGradients(_Logit(gmodel, c)).attribute(x.float(), baselines=0.0, target=0)
    return attr[0].sum(0).detach().numpy()


#: integrated gradients' (steps, crops a pass) also timed: the path in one pass, and half the steps
IG_VARIANTS = ((32, 32), (16, 16))


def ig_variant(engine, gmodel, photo: Path, steps: int, per: int) -> np.ndarray:
    """The Explainer's integrated-gradients work for one photo with other steps and crops a pass."""
    from alexnet_kit.explain import methods as M

    meta = engine.meta
    x = meta.preprocess.crops(meta.preprocess.load(photo)[None], 1)
    c = int(torch.softmax(engine.logits(x).float(), 1)[0].argmax())
    return M.gradient_map("integrated-gradients", gmodel, "logits", lambda out: out[:, c], x, steps, per).numpy()


def part_speed(args) -> None:
    from alexnet_kit.checkpoint import load_model
    from alexnet_kit.engines import choose
    from alexnet_kit.explain import DEFAULT_METHOD, METHODS, Explainer
    from alexnet_kit.explain import methods as M

    say("\n## 2. speed on the paper's network")
    photos = demo_photos(args.speed_photos)
    if photos is None:
        say("skipped: the shared data (../shared/data/photos) is absent; set ALEXNET_KIT_SHARED_DATA")
        return
    ckpt = paper_checkpoint(args.workdir)
    model, meta = load_model(ckpt)
    params = sum(p.numel() for p in model.parameters())
    del model
    say(f"model: {ckpt} (AlexNetConfig(), {params:,} parameters, UNTRAINED, seed 0); {torch.get_num_threads()} "
        f"torch threads; photos: {', '.join(p.name for p in photos)}; {args.repeats} rounds interleaved, median "
        "of the rounds' seconds a photo")
    engine = choose(ckpt, "torch", "fp32", batch=64).open()
    paths = {}  # name -> a function of a list of photos

    def explaining(ex):
        return lambda ps: [ex.explain(p, top=1) for p in ps]

    for m in METHODS:
        paths[f"ours {m}"] = explaining(Explainer(engine, m))
    for b in (8, 16, 32):  # 64 is ours (the default) above
        paths[f"ours occlusion batch {b}"] = explaining(Explainer(engine, "occlusion", batch=b))
    gmodel = M.gradient_model(engine.model)
    for m in ("occlusion", "integrated-gradients"):
        paths[f"captum {m}"] = lambda ps, m=m: [captum_default(engine, gmodel, m, p) for p in ps]
    for steps, per in IG_VARIANTS:  # what integrated gradients would cost with its path in fewer, larger passes
        paths[f"ig {steps} steps, {per} a pass"] = lambda ps, s=steps, b=per: [ig_variant(engine, gmodel, p, s, b) for p in ps]

    auto = choose(ckpt, "auto", "auto", batch=64, log=lambda s: say("  " + s))
    say(f"  auto for the checkpoint: {auto.engine} {auto.precision}: {auto.reason}")
    paths["ours occlusion, auto engine (checkpoint)"] = explaining(Explainer(auto, "occlusion", checkpoint=ckpt))
    if args.onnx:
        from alexnet_kit.export import export_checkpoint

        onnx = args.workdir / "paper-untrained-explain" / "model.onnx"
        if not onnx.exists():
            onnx.parent.mkdir(parents=True, exist_ok=True)
            t = time.perf_counter()
            r = export_checkpoint(ckpt, "onnx", onnx, min_top1=0.0)
            say(f"  exported ONNX in {time.perf_counter() - t:.0f} s: {r.parity.summary()}")
        auto_onnx = choose(onnx, "auto", "auto", batch=64, log=lambda s: say("  " + s))
        say(f"  auto for the ONNX export: {auto_onnx.engine} {auto_onnx.precision}: {auto_onnx.reason}")
        paths["ours occlusion, auto engine (ONNX export)"] = explaining(Explainer(auto_onnx, "occlusion"))

    for fn in paths.values():  # warm up on one photo: first-call allocations, graph optimisation
        fn(photos[:1])
    times: dict[str, list[float]] = {k: [] for k in paths}
    for r in range(args.repeats):
        for name, fn in paths.items():
            t = time.perf_counter()
            fn(photos)
            times[name].append((time.perf_counter() - t) / len(photos))
        say(f"  round {r + 1}: " + ", ".join(f"{k} {v[-1]:.2f}" for k, v in times.items()))
    med = {k: statistics.median(v) for k, v in times.items()}

    say("\n| method | ours s/photo (Explainer, torch fp32) | Captum defaults s/photo | Captum / ours | rounds (ours) |")
    say("| --- | ---: | ---: | ---: | --- |")
    for m in METHODS:
        ours = med[f"ours {m}"]
        if f"captum {m}" in med:
            cap = med[f"captum {m}"]
            capcell, ratio = f"{cap:.2f}", f"{cap / ours:.2f}x"
        else:
            capcell, ratio = "same call", "1.0 (same Captum call)"
        name = f"{m} (default)" if m == DEFAULT_METHOD else m
        say(f"| {name} | {ours:.2f} | {capcell} | {ratio} | {median_runs(times[f'ours {m}'])} |")
    say("\nCaptum defaults: occlusion perturbations_per_eval=1 (ours: 64 crops a pass); integrated gradients "
        f"n_steps=50, internal_batch_size=None (ours: {M.IG_STEPS} steps, 8 a pass). gradcam, guided-gradcam and "
        "deconvnet call Captum exactly as its defaults would: ratio 1.0.")
    ours_ig = med["ours integrated-gradients"]
    say(f"\n| integrated gradients | s/photo | vs ours ({M.IG_STEPS} steps, 8 a pass) | rounds |")
    say("| --- | ---: | ---: | --- |")
    say(f"| {M.IG_STEPS} steps, 8 a pass (ours, the Explainer) | {ours_ig:.2f} | 1.00x | "
        f"{median_runs(times['ours integrated-gradients'])} |")
    say(f"| 50 steps, all in one pass (Captum default) | {med['captum integrated-gradients']:.2f} | "
        f"{med['captum integrated-gradients'] / ours_ig:.2f}x | {median_runs(times['captum integrated-gradients'])} |")
    for steps, per in IG_VARIANTS:
        k = f"ig {steps} steps, {per} a pass"
        say(f"| {steps} steps, {per} a pass | {med[k]:.2f} | {med[k] / ours_ig:.2f}x | {median_runs(times[k])} |")
    say("\n| occlusion | s/photo | vs batch 64 (ours) | rounds |")
    say("| --- | ---: | ---: | --- |")
    occ = {"per-eval batch 1 (Captum default)": "captum occlusion",
           **{f"per-eval batch {b}": f"ours occlusion batch {b}" for b in (8, 16, 32)},
           "per-eval batch 64 (ours, default)": "ours occlusion",
           "batch 64, auto engine for the checkpoint": "ours occlusion, auto engine (checkpoint)",
           "batch 64, auto engine for the ONNX export": "ours occlusion, auto engine (ONNX export)"}
    for label, key in occ.items():
        if key in med:
            say(f"| {label} | {med[key]:.2f} | {med[key] / med['ours occlusion']:.2f}x | {median_runs(times[key])} |")
    torch_b = {b: med[f"ours occlusion batch {b}"] for b in (8, 16, 32)} | {64: med["ours occlusion"]}
    fastest = min(torch_b, key=torch_b.get)
    say(f"\nfastest per-eval batch on torch fp32: {fastest} ({torch_b[fastest]:.2f} s/photo)")
    d = med[f"ours {DEFAULT_METHOD}"]
    say(f"goal: the default method ({DEFAULT_METHOD}) at most {GOAL_S:.0f} s a photo on 2 cores: {d:.2f} s -> "
        + ("met" if d <= GOAL_S else "NOT met"))
    say("within the goal: " + ", ".join(f"{k.removeprefix('ours ')} {v:.2f} s" for k, v in med.items() if v <= GOAL_S))


# -- 3. the units pass ------------------------------------------------------------------


def run_cli(*args) -> float:
    t = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "alexnet_kit", *map(str, args)], capture_output=True, text=True)
    took = time.perf_counter() - t
    if r.returncode != 0:
        raise SystemExit(f"alexnet-kit {' '.join(map(str, args))} failed ({r.returncode}):\n{r.stderr[-2000:]}")
    return took


def part_units(args) -> None:
    from alexnet_kit.images import is_image_path
    from alexnet_kit.paths import optional_shared

    say("\n## 3. units: the top-9 pass over an index")
    root = optional_shared("caltech101")
    if root is None:
        say("skipped: the shared data (../shared/data/caltech101) is absent; set ALEXNET_KIT_SHARED_DATA")
        return
    files = sorted(p for p in root.rglob("*") if p.is_file() and is_image_path(p))
    files = [files[i] for i in sorted(np.random.default_rng(args.seed).permutation(len(files))[: args.units_photos])]
    ckpt = paper_checkpoint(args.workdir)
    tmp = Path(tempfile.mkdtemp(prefix="bench-units-", dir=args.workdir))
    try:
        for p in files:  # class folders keep the names apart (image_0001.jpg is in every class)
            (tmp / "photos" / p.parent.name).mkdir(parents=True, exist_ok=True)
            (tmp / "photos" / p.parent.name / p.name).symlink_to(p)
        say(f"photos: {len(files)} of Caltech-101's {len(list(root.rglob('*.jpg')))} (seed {args.seed}), symlinked; model: "
            f"{ckpt} (paper's network, untrained); each figure a fresh `python -m alexnet_kit` process, wall clock")
        idx = tmp / "idx"
        build = run_cli("index", "build", tmp / "photos", "--out", idx, "--model", ckpt, "--engine", "torch",
                        "--precision", "fp32", "-q")
        say(f"  index build: {build:.1f} s = {len(files) / build:.1f} photos/s")
        first, later, sheet = [], [], []
        for r in range(args.pass_repeats):
            shutil.rmtree(idx / "units", ignore_errors=True)
            first.append(run_cli("units", idx, "--layer", "conv5", "--unit", 0, "--top", 9, "--out", tmp / "u.png", "-q"))
            say(f"  units --unit 0 (the pass), run {r + 1}: {first[-1]:.1f} s = {len(files) / first[-1]:.1f} photos/s")
        for u in range(1, args.repeats + 1):
            later.append(run_cli("units", idx, "--layer", "conv5", "--unit", u, "--top", 9, "--out", tmp / f"u{u}.png", "-q"))
        for _ in range(max(1, args.repeats - 1)):
            sheet.append(run_cli("units", idx, "--layer", "conv5", "--units", "all", "--top", 9, "--out", tmp / "all.png", "-q"))
        startup = [run_cli("--help") for _ in range(args.repeats)]
        table = sum(f.stat().st_size for f in (idx / "units").rglob("*") if f.is_file())
        say("\n| step | seconds | photos/s | runs |")
        say("| --- | ---: | ---: | --- |")
        say(f"| `index build` (torch fp32) | {build:.1f} | {len(files) / build:.1f} | 1 |")
        f = statistics.median(first)
        say(f"| `units --unit 0`, first call: the pass over every photo, all 256 conv5 units stored | {f:.1f} | "
            f"{len(files) / f:.1f} | {median_runs(first)} |")
        say(f"| `units --unit N`, later calls: from the stored table | {statistics.median(later):.2f} | - | {median_runs(later)} |")
        say(f"| `units --units all` (256 units x 9 patches, from the table) | {statistics.median(sheet):.2f} | - | {median_runs(sheet)} |")
        say(f"| `alexnet-kit --help` (process start, for scale) | {statistics.median(startup):.2f} | - | {median_runs(startup)} |")
        say(f"\nthe pass / index build: {f / build:.2f}x the time; a later call / the pass: "
            f"{statistics.median(later) / f:.3f}; stored table {table / 1e6:.1f} MB for {len(files)} photos")
    finally:
        if args.keep:
            say(f"kept: {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


# -- gradcam-package: jacobgil's grad-cam against Captum's LayerGradCam ---------------------


class _Absent:
    """Stands in for a name of a package that is not installed; fails only if GradCAM's path ever used it."""

    def __init__(self, name: str):
        self.name = name

    def __call__(self, *a, **k):
        raise RuntimeError(f"{self.name} is not installed (stood in for by bench_explain.py)")

    def __getattr__(self, attr: str):
        return _stand_in(self.name, attr)


def _stand_in(module: str, attr: str):
    if attr.startswith("__"):  # __file__, __spec__ ...: what inspection asks of a real module
        raise AttributeError(attr)
    return _Absent(f"{module}.{attr}")


def _import_gradcam_package():
    """pytorch_grad_cam from /tmp/gradcam-site. Its __init__ imports every CAM variant and metric, and with them
    scipy, scikit-learn and torchvision, which the project does not depend on; GradCAM's 2-D path uses none of them
    (numpy, torch and cv2.resize only), so a missing one is stood in for by empty modules (any name in them fails
    when called), said on the log."""
    import importlib.abc
    import importlib.machinery
    import importlib.util
    import types

    missing = [m for m in ("scipy", "sklearn", "torchvision") if importlib.util.find_spec(m) is None]

    class Stubs(importlib.abc.MetaPathFinder, importlib.abc.Loader):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in missing:
                return importlib.machinery.ModuleSpec(name, self, is_package=True)
            return None

        def create_module(self, spec):
            mod = types.ModuleType(spec.name)
            mod.__path__ = []
            mod.__getattr__ = lambda attr, n=spec.name: _stand_in(n, attr)
            return mod

        def exec_module(self, module):
            pass

    sys.path.insert(0, str(GRADCAM_SITE))
    sys.meta_path.append(Stubs())
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    return GradCAM, ClassifierOutputTarget, missing


def part_gradcam_package(args) -> None:
    from alexnet_kit.engines import choose
    from alexnet_kit.explain import methods as M

    say("\n## gradcam-package: jacobgil's grad-cam vs Captum LayerGradCam (our gradcam)")
    if not (GRADCAM_SITE / "pytorch_grad_cam").is_dir():
        say(f"skipped: install it first: .venv/bin/pip install --no-deps --target {GRADCAM_SITE} grad-cam ttach")
        return
    if not args.model.exists():
        say(f"skipped: no trained model at {args.model} (run `make quickstart` first)")
        return
    photos = deletion_photos(args.gradcam_photos, args.seed)
    if photos is None:
        say("skipped: the shared data (../shared/data/caltech101) is absent")
        return
    GradCAM, ClassifierOutputTarget, stubbed = _import_gradcam_package()
    version = next(GRADCAM_SITE.glob("grad_cam-*.dist-info")).name.split("-")[1].removesuffix(".dist")
    say(f"grad-cam {version} from {GRADCAM_SITE}; missing dependencies stood in for by empty modules (GradCAM's "
        f"2-D path does not use them): {', '.join(stubbed) or 'none'}")
    engine = choose(args.model, "torch", "fp32", batch=64).open()
    meta = engine.meta
    gm = M.gradient_model(engine.model)
    xs, cs = [], []
    for _, p in photos:
        x = meta.preprocess.crops(meta.preprocess.load(p)[None], 1).float()
        xs.append(x)
        cs.append(int(engine.logits(x).argmax(1)[0]))
    cam = GradCAM(model=gm, target_layers=[gm.act5])

    def theirs(x, c):  # the weights are frozen (as in ours): the input carries the graph, as Captum's does
        return cam(input_tensor=x.clone().requires_grad_(True), targets=[ClassifierOutputTarget(c)])[0]

    def ours(x, c):
        return M.gradient_map("gradcam", gm, "logits", lambda out, c=c: out[:, c], x).numpy()

    ours(xs[0], cs[0]), theirs(xs[0], cs[0])  # warm up
    times = {"ours": [], "theirs": []}
    maps = {}
    for _ in range(args.repeats):
        for name, fn in (("ours", ours), ("theirs", theirs)):
            t = time.perf_counter()
            maps[name] = [fn(x, c) for x, c in zip(xs, cs)]
            times[name].append((time.perf_counter() - t) / len(xs))
    cam.activations_and_grads.release()
    corr, gap, flat = [], [], 0
    for a, b in zip(maps["ours"], maps["theirs"]):
        if a.std() == 0 or b.std() == 0:
            flat += 1
            continue
        corr.append(float(np.corrcoef(a.ravel(), b.ravel())[0, 1]))
        a01 = (a - a.min()) / (a.max() - a.min())  # theirs is min-max scaled: ours the same way, then compared
        gap.append(float(np.abs(a01 - b).max()))
    corr = np.asarray(corr)
    med = {k: statistics.median(v) for k, v in times.items()}
    say(f"{len(xs)} photos, quickstart model, top class; maps compared at 224x224 (theirs: ReLU, min-max scaled, "
        "cv2.resize; ours: ReLU, bilinear upsampling, unscaled; Pearson is blind to the scaling)")
    say(f"Pearson r: mean {corr.mean():.6f}, min {corr.min():.6f}, median {np.median(corr):.6f} over {len(corr)} photos"
        + (f" ({flat} all-zero maps left out)" if flat else "")
        + f"; largest difference of the [0, 1]-scaled maps: {max(gap):.2e}")
    say(f"ms/photo (map only, {args.repeats} rounds): Captum LayerGradCam + interpolate {1e3 * med['ours']:.1f} "
        f"[{' '.join(f'{1e3 * t:.1f}' for t in times['ours'])}], grad-cam {1e3 * med['theirs']:.1f} "
        f"[{' '.join(f'{1e3 * t:.1f}' for t in times['theirs'])}]; grad-cam / Captum {med['theirs'] / med['ours']:.2f}x")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--part", choices=["deletion", "speed", "units", "all", "gradcam-package"], default="all",
                    help="all: deletion, speed and units (gradcam-package only when named)")
    ap.add_argument("--model", type=Path, default=QUICKSTART_MODEL, help="trained model for deletion and gradcam-package")
    ap.add_argument("--photos", type=int, default=250, help="deletion: photos (default 250)")
    ap.add_argument("--steps", type=int, default=32, help="deletion: steps (default 32)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--methods", type=lambda v: [m for m in v.split(",") if m], default=None,
                    help="deletion: only these methods (comma-separated; default every method)")
    ap.add_argument("--ig-steps", type=lambda v: [int(x) for x in v.split(",") if x], default=[],
                    help="deletion: extra rows of integrated gradients with these steps, e.g. 16,64")
    ap.add_argument("--speed-photos", type=int, default=4, help="speed: photos from ../shared/data/photos (default 4)")
    ap.add_argument("--repeats", type=int, default=3, help="rounds of every timing (default 3)")
    ap.add_argument("--no-onnx", dest="onnx", action="store_false", help="speed: skip occlusion on the ONNX export's auto engine")
    ap.add_argument("--units-photos", type=int, default=5000, help="units: photos in the index (default 5000)")
    ap.add_argument("--pass-repeats", type=int, default=2, help="units: runs of the first call's pass (default 2)")
    ap.add_argument("--keep", action="store_true", help="units: keep the temp index (its path is printed)")
    ap.add_argument("--gradcam-photos", type=int, default=20)
    ap.add_argument("--workdir", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "alexnet-kit-bench")
    args = ap.parse_args()

    say("machine:", describe("captum"), "| cores this process may use:", len(os.sched_getaffinity(0)))
    say(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    parts = ["deletion", "speed", "units"] if args.part == "all" else [args.part]
    for part in parts:
        t = time.perf_counter()
        {"deletion": part_deletion, "speed": part_speed, "units": part_units, "gradcam-package": part_gradcam_package}[part](args)
        say(f"({part}: {time.perf_counter() - t:.0f} s; load average now {os.getloadavg()[0]:.1f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
