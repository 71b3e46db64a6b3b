"""Training-step images/s: our step vs a plain PyTorch loop on the same model, same run.

    .venv/bin/python benchmarks/bench_train_step.py                        # quickstart network, CPU
    .venv/bin/python benchmarks/bench_train_step.py --model paper --batch 32
    .venv/bin/python benchmarks/bench_train_step.py --data runs/caltech10/packed   # + end to end from packed data
    .venv/bin/python benchmarks/bench_train_step.py --compare-amp --model caltech10 --classes 100   # fp32 vs bf16 autocast
    .venv/bin/python benchmarks/bench_train_step.py --compare-widths --classes 100                  # --recipe auto's widths
    .venv/bin/python benchmarks/bench_train_step.py --compare-threads --model caltech10 --classes 100   # 1 thread vs all
    python benchmarks/bench_train_step.py --device cuda --model paper --batch 128 [--data PACKED] [--compile]

* ours: alexnet_kit.train.trainer.train_step (the paper's update rule as one
  foreach pass, gradients set to None), channels_last, plus on CUDA bf16
  autocast, as the trainer runs it
* baseline: the plain loop: model(x), cross-entropy, optimizer.zero_grad(),
  backward, torch.optim.SGD(momentum 0.9, weight decay 5e-4).step(), fp32, NCHW

Synthetic input measures the step alone; --trainer (or --data PACKED) then
runs the trainer itself in the same process: packed memmap, §4.1 augmentation
in worker processes on the CPU or on the device on CUDA, device-side meters,
end to end, steady state after --warmup steps. Prints the machine, medians of
--repeats timed runs (interleaved) and the ratio.

--compare-amp times our step in fp32 and under bf16 autocast (what --amp auto
picks on a CPU with AMX or AVX-512 BF16), interleaved in one run; the
synthetic step of each of --recipe auto's widths with --compare-widths (their
cost relative to width s is what train/auto_recipe.py's table holds).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe  # noqa: E402

from alexnet_kit.model import AlexNet, AlexNetConfig  # noqa: E402
from alexnet_kit.train.optim import PaperSGD  # noqa: E402
from alexnet_kit.train.synthetic import time_steps  # noqa: E402
from alexnet_kit.train.trainer import train_step  # noqa: E402

MODELS = {
    "quickstart": dict(conv_channels=(32, 64, 96, 96, 64), fc_features=512),
    "caltech10": dict(conv_channels=(32, 64, 96, 96, 64), fc_features=1024),
    "paper": dict(),
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=sorted(MODELS), default="quickstart")
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--compile", action="store_true", help="torch.compile our model")
    ap.add_argument("--data", help="a prepared folder: also time the trainer end to end on it")
    ap.add_argument("--trainer", action="store_true", help="also time the trainer end to end (a synthetic packed set unless --data)")
    ap.add_argument("--trainer-steps", type=int, default=24)
    ap.add_argument("--warmup", type=int, default=4)
    ap.add_argument("--trainer-repeats", type=int, default=3)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--compare-amp", action="store_true", help="only: our step in fp32 vs bf16 autocast, interleaved")
    ap.add_argument("--compare-widths", action="store_true", help="only: our step for each of --recipe auto's widths")
    ap.add_argument("--compare-threads", action="store_true", help="only: our step on one thread vs all cores, fp32 and bf16")
    args = ap.parse_args()
    if args.compare_threads:
        return compare_threads(args)
    if args.compare_amp or args.compare_widths:
        return compare(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    cuda = dev.type == "cuda"
    print(f"machine: {describe()}")
    cfg = AlexNetConfig(num_classes=args.classes, **MODELS[args.model])
    torch.manual_seed(0)
    base = AlexNet(cfg).to(dev)
    ours = AlexNet(cfg).to(dev)
    ours.load_state_dict(base.state_dict())
    amp = torch.bfloat16 if cuda else None
    ours = ours.to(memory_format=torch.channels_last)  # the trainer's default on every device
    if cuda:
        torch.backends.cudnn.benchmark = True
    fwd = torch.compile(ours) if args.compile else ours
    opt_ours = PaperSGD(ours.parameters(), lr=1e-4)
    opt_base = torch.optim.SGD(base.parameters(), lr=1e-4, momentum=0.9, weight_decay=5e-4)
    x = torch.randn(args.batch, 3, cfg.input_size, cfg.input_size, device=dev) * 50
    y = torch.randint(0, args.classes, (args.batch,), device=dev)
    x_cl = x.contiguous(memory_format=torch.channels_last)

    def step_ours(x_, y_):
        train_step(fwd, opt_ours, x_, y_, amp)

    def step_base(x_, y_):
        opt_base.zero_grad()
        loss = F.cross_entropy(base(x_), y_)
        loss.backward()
        opt_base.step()

    print(f"model {args.model} ({sum(p.numel() for p in base.parameters()):,} parameters), batch {args.batch}, device {dev}"
          + (", ours: bf16 autocast + channels_last" if cuda else ", ours: channels_last") + (" + torch.compile" if args.compile else ""))
    res = {"ours": [], "base": []}
    for r in range(args.repeats):
        res["ours"].append(time_steps(step_ours, x_cl, y, args.steps, 2 if r == 0 else 1, dev))
        res["base"].append(time_steps(step_base, x, y, args.steps, 2 if r == 0 else 1, dev))
    mo, mb = statistics.median(res["ours"]), statistics.median(res["base"])
    print(f"ours, train_step + PaperSGD : {mo:8.1f} images/s  (runs: {', '.join(f'{v:.1f}' for v in res['ours'])})")
    print(f"baseline, plain loop + SGD  : {mb:8.1f} images/s  (runs: {', '.join(f'{v:.1f}' for v in res['base'])})")
    print(f"ours / plain = {mo / mb:.2f}x (target >= 1.0x)")
    if args.trainer or args.data:
        # the trainer itself (loader workers, augmentation, device meters, checkpoint-free
        # steady state) on a packed set, timed between syncs after --warmup steps
        import tempfile

        from alexnet_kit.train.recipe import load_recipe
        from alexnet_kit.train.synthetic import timed_run, write_synthetic_packed

        tmp = Path(tempfile.mkdtemp(prefix="bench-train-"))
        data = Path(args.data) if args.data else write_synthetic_packed(
            tmp / "packed", classes=args.classes, per_class=-(-(args.trainer_steps + 1) * args.batch // args.classes), val_per_class=1)
        r = load_recipe("paper" if args.model == "paper" else "quickstart")
        r.device, r.batch_size, r.workers, r.threads = args.device, args.batch, args.workers, args.threads
        r.max_steps, r.epochs, r.checkpoint_minutes, r.compile, r.keep_last = args.trainer_steps, 1, 0, args.compile, 1
        r.model = dict(r.model, **MODELS[args.model])
        # interleaved with synthetic-step rounds, so the machine's load hits both alike
        e2e_runs, syn_runs = [], []
        for k in range(args.trainer_repeats):
            r.out = str(tmp / f"run{k}")
            e2e_runs.append(timed_run(r, data, warmup=args.warmup)["images_per_s"])
            syn_runs.append(time_steps(step_ours, x_cl, y, args.steps, 1, dev))
        e2e, syn = statistics.median(e2e_runs), statistics.median(syn_runs)
        print(f"trainer end to end ({'synthetic packed set' if not args.data else args.data}, {args.workers} loader worker(s), "
              f"{args.trainer_steps - args.warmup} steps after {args.warmup}): {e2e:8.1f} images/s  "
              f"(runs: {', '.join(f'{v:.1f}' for v in e2e_runs)})")
        print(f"synthetic step, interleaved with those runs : {syn:8.1f} images/s  (runs: {', '.join(f'{v:.1f}' for v in syn_runs)})")
        print(f"trainer end to end / synthetic step = {e2e / syn:.2f}")
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return 0


def compare(args) -> int:
    """Interleaved medians of our step: fp32 vs bf16 autocast (--compare-amp) for --model, or
    every width level of --recipe auto (--compare-widths, in fp32 and bf16), relative to width s."""
    from alexnet_kit.engines.cpu import native_bf16
    from alexnet_kit.train.auto_recipe import LEVELS

    if args.threads:
        torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    print(f"machine: {describe()}; native bf16: {native_bf16() if dev.type == 'cpu' else 'n/a'}")
    if args.compare_widths:
        nets = {lv.name: dict(conv_channels=lv.conv_channels, fc_features=lv.fc_features) for lv in LEVELS}
    else:
        nets = {args.model: MODELS[args.model]}
    cases = [(name, amp) for name in nets for amp in ("fp32", "bf16")]
    steppers = {}
    for name, widths in nets.items():
        cfg = AlexNetConfig(num_classes=args.classes, init="kaiming", **widths)
        torch.manual_seed(0)
        net = AlexNet(cfg).to(dev).to(memory_format=torch.channels_last)
        opt = PaperSGD(net.parameters(), lr=1e-4)
        steppers[name] = (net, opt, cfg)
    x = (torch.randn(args.batch, 3, 224, 224, device=dev) * 50).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, args.classes, (args.batch,), device=dev)
    # wall-clock images/s, and images per CPU-second of this process (all its threads): on a machine
    # shared with other jobs the wall clock measures the neighbours too, the CPU time mostly not
    res = {c: {"wall": [], "cpu": []} for c in cases}
    for r in range(args.repeats):
        for name, amp in cases:
            net, opt, _ = steppers[name]
            dtype = torch.bfloat16 if amp == "bf16" else None
            for _ in range(2 if r == 0 else 1):
                train_step(net, opt, x, y, dtype)
            w, c = time.perf_counter(), time.process_time()
            for _ in range(args.steps):
                train_step(net, opt, x, y, dtype)
            res[(name, amp)]["wall"].append(args.steps * args.batch / (time.perf_counter() - w))
            res[(name, amp)]["cpu"].append(args.steps * args.batch / (time.process_time() - c))
    print(f"batch {args.batch}, device {dev}, {torch.get_num_threads()} thread(s), {args.steps} steps x {args.repeats} repeats "
          f"(interleaved), channels_last; images per CPU-second (wall-clock images/s)")
    med = {k: {m: statistics.median(v[m]) for m in v} for k, v in res.items()}
    ref = med[("s", "fp32")]["cpu"] if ("s", "fp32") in med else None
    for name, amp in cases:
        params = sum(p.numel() for p in steppers[name][0].parameters())
        rel = f"  cost vs s fp32: {ref / med[(name, amp)]['cpu']:.2f}x" if ref else ""
        print(f"{name:6s} {amp}: {med[(name, amp)]['cpu']:7.1f} per CPU-s ({med[(name, amp)]['wall']:6.1f} images/s; "
              f"{params:,} parameters; runs: {', '.join(f'{v:.1f}' for v in res[(name, amp)]['cpu'])}){rel}")
    for name in nets:
        print(f"{name}: bf16 / fp32 = {med[(name, 'bf16')]['cpu'] / med[(name, 'fp32')]['cpu']:.2f}x per CPU-second, "
              f"{med[(name, 'bf16')]['wall'] / med[(name, 'fp32')]['wall']:.2f}x wall-clock")
    return 0


def compare_threads(args) -> int:
    """Wall-clock images/s of our step for --model on one thread and on every usable core, fp32 and
    bf16 autocast, interleaved (what --recipe auto's probe weighs, over more steps)."""
    from alexnet_kit.engines.cpu import usable_cores

    cores = usable_cores()
    print(f"machine: {describe()}; usable cores {cores}")
    cfg = AlexNetConfig(num_classes=args.classes, init="kaiming", **MODELS[args.model])
    torch.manual_seed(0)
    net = AlexNet(cfg).to(memory_format=torch.channels_last)
    opt = PaperSGD(net.parameters(), lr=1e-4)
    x = (torch.randn(args.batch, 3, 224, 224) * 50).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, args.classes, (args.batch,))
    cases = [(amp, n) for amp in ("fp32", "bf16") for n in sorted({1, cores})]
    res = {c: [] for c in cases}
    for r in range(args.repeats):
        for amp, n in cases:
            torch.set_num_threads(n)
            dtype = torch.bfloat16 if amp == "bf16" else None
            res[(amp, n)].append(time_steps(lambda a, b: train_step(net, opt, a, b, dtype), x, y, args.steps, 2 if r == 0 else 1, "cpu"))
    print(f"model {args.model}, batch {args.batch}, {args.steps} steps x {args.repeats} repeats (interleaved), wall-clock images/s")
    for amp, n in cases:
        print(f"{amp} {n} thread(s): {statistics.median(res[(amp, n)]):7.1f} images/s  (runs: {', '.join(f'{v:.1f}' for v in res[(amp, n)])})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
