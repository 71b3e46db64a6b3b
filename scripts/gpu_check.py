"""The one GPU check of the CUDA paths, run by scripts/gpu-check.sh OUT [--cpu].

Runs from a plain source checkout: the stages install as alexnet_kit.train /
alexnet_kit.export (setup.py's package-dir mapping), so this builds a
temporary folder of symlinks laid out like the installed package and puts it
first on PYTHONPATH (for itself and every subprocess). Nothing is installed.

Stages (each records ok/error/seconds and its numbers in OUT/gpu-check.json,
rewritten after every stage so a timeout keeps what finished):

  data    a packed ImageNet-shaped set: 1000 classes x 20 photos at 256x256, synthetic pixels
  train   the trainer itself on it: bf16 + channels_last, compile off and on; end-to-end
          images/s over steady-state steps, next to a synthetic step (device-resident input)
          of the same network in the same run; GPU busy fraction from nvidia-smi if present
  towers  the two towers placed on (cuda:0, cuda:0) equal the grouped model (fp32, no TF32)
  ddp     torchrun with one NCCL process: the epoch-end and evaluation all-reduces on CUDA,
          and the every-16-steps stop agreement
  resume  --deterministic true on CUDA (cuBLAS workspace), SIGKILL mid-run, --resume on the
          GPU (compared bitwise with an uninterrupted run), then the GPU state resumed on the CPU
  serve   ten-crop evaluate and classify with --device cuda; ONNX export of the GPU-trained
          checkpoint with its parity check

--cpu: the same stages on the CPU with a tiny network and set (what `make test` runs, so
the script cannot rot unseen); compile is skipped there.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STAGE_PACKAGES = {"train": "train", "export": "export", "apps": "apps"}


def source_layout(root: Path) -> Path:
    """``root/alexnet_kit``: symlinks to alexnet_kit/*, plus train/, export/, apps/ as subpackages."""
    pkg = root / "alexnet_kit"
    pkg.mkdir(parents=True)
    for entry in (REPO / "alexnet_kit").iterdir():
        if entry.name not in STAGE_PACKAGES and entry.name != "__pycache__":
            (pkg / entry.name).symlink_to(entry)
    for name, folder in STAGE_PACKAGES.items():
        if (REPO / folder / "__init__.py").is_file():
            (pkg / name).symlink_to(REPO / folder)
    return root


def log(msg: str) -> None:
    print(f"[gpu-check {time.strftime('%H:%M:%S')}] {msg}", flush=True)


class Check:
    def __init__(self, out: Path, cpu: bool, budget: float, requested: list[str]):
        self.out, self.cpu, self.budget, self.requested = out, cpu, budget, list(requested)
        self.t0 = time.monotonic()
        self.scratch = Path(tempfile.mkdtemp(prefix="gpu-check-"))
        self.results: dict = {"mode": "cpu" if cpu else "cuda", "started_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
                              "stages": {}}
        self.device = "cpu" if cpu else "cuda"
        self.env = dict(os.environ)

    def save(self) -> None:
        self.results["seconds"] = round(time.monotonic() - self.t0, 1)
        # ok only when every requested stage ran and passed: a skipped stage (time budget) or
        # one the run never reached (killed at the timeout) is not a pass
        stages = self.results["stages"]
        problems = {"failed": [n for n in self.requested if n in stages and not stages[n].get("ok") and not stages[n].get("skipped")],
                    "skipped": [n for n in self.requested if n in stages and stages[n].get("skipped")],
                    "missing": [n for n in self.requested if n not in stages]}
        self.results["ok"] = bool(self.requested) and not any(problems.values())
        self.results["not_ok"] = {k: v for k, v in problems.items() if v}
        tmp = self.out / ".gpu-check.json.tmp"
        tmp.write_text(json.dumps(self.results, indent=1, default=str))
        os.replace(tmp, self.out / "gpu-check.json")

    def stage(self, name: str, fn) -> None:
        left = self.budget - (time.monotonic() - self.t0)
        if left < 10:
            self.results["stages"][name] = {"ok": False, "skipped": f"time budget of {self.budget:.0f} s spent"}
            log(f"{name}: skipped (time budget)")
            self.save()
            return
        log(f"{name}: start ({left:.0f} s of budget left)")
        t = time.monotonic()
        rec: dict = {}
        try:
            info = fn(self) or {}
            rec.update(info)
            rec.setdefault("ok", True)
        except Exception as e:
            rec.update(ok=False, error=f"{type(e).__name__}: {e}", traceback=traceback.format_exc()[-3000:])
            log(f"{name}: FAILED {type(e).__name__}: {e}")
        rec["seconds"] = round(time.monotonic() - t, 1)
        self.results["stages"][name] = rec
        log(f"{name}: {'ok' if rec.get('ok') else 'not ok'} in {rec['seconds']} s: "
            + json.dumps({k: v for k, v in rec.items() if k not in ("traceback", "log_tail")}, default=str)[:600])
        self.save()

    def run(self, args: list, timeout: float, env: dict | None = None) -> subprocess.CompletedProcess:
        log("$ " + " ".join(str(a) for a in args))
        p = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=timeout, env=env or self.env)
        sys.stdout.write(p.stdout[-4000:])
        sys.stdout.write(p.stderr[-4000:])
        if p.returncode != 0:
            raise RuntimeError(f"exit {p.returncode}: {(p.stderr or p.stdout).strip().splitlines()[-1:] }")
        return p


# -- stages --------------------------------------------------------------------
def stage_data(c: Check) -> dict:
    from alexnet_kit.train.synthetic import write_synthetic_packed

    classes, per_class = (4, 12) if c.cpu else (1000, 20)
    t = time.monotonic()
    c.big = write_synthetic_packed(c.scratch / "imagenet-shaped", classes=classes, per_class=per_class, val_per_class=2 if c.cpu else 1)
    gb = sum(f.stat().st_size for f in c.big.rglob("images.u8")) / 1e9
    # a small set for the multi-process, resume and serving stages (seconds, not minutes)
    c.small = write_synthetic_packed(c.scratch / "small", classes=4, per_class=12, val_per_class=2, seed=1)
    return {"classes": classes, "train_photos": classes * per_class, "gigabytes": round(gb, 2),
            "write_s": round(time.monotonic() - t, 1), "path": str(c.big)}


MODEL_TINY = {"conv_channels": (16, 32, 48, 48, 32), "fc_features": 64}


def recipe_for(c: Check, out: Path, **values):
    from alexnet_kit.train.recipe import load_recipe

    r = load_recipe("paper")
    r.out, r.device, r.data = str(out), c.device, str(c.big)
    r.workers = 1 if c.cpu else max(2, min(12, (os.cpu_count() or 4) - 2))
    r.checkpoint_minutes = 0
    r.keep_last = 1
    if c.cpu:
        r.batch_size, r.threads = 8, 1
        r.model = dict(r.model, **MODEL_TINY)
    for k, v in values.items():
        setattr(r, k, v)
    return r


def synthetic_step(r, num_classes: int, steps: int, warmup: int) -> float:
    """Images/s of the training step alone, input already on the device (the same step and options)."""
    import torch

    from alexnet_kit.train.parallel import build_grouped, place
    from alexnet_kit.train.synthetic import time_steps
    from alexnet_kit.train.trainer import build_optimizer, cuda_bf16_native, resolve_amp, train_step

    dev = torch.device(r.device if r.device != "auto" else "cuda")
    cfg = r.model_config(num_classes)
    net = place(build_grouped(cfg, 0), "none", dev, channels_last=True)
    fwd = torch.compile(net) if r.compile else net
    opt = build_optimizer(net, r)
    amp, scaled = resolve_amp(r.amp, dev.type, cuda_bf16_native if dev.type == "cuda" else (lambda: False))
    scaler = torch.amp.GradScaler(dev.type) if scaled else None
    x = (torch.randn(r.batch_size, 3, cfg.input_size, cfg.input_size, device=dev) * 50).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, num_classes, (r.batch_size,), device=dev)
    return time_steps(lambda xb, yb: train_step(fwd, opt, xb, yb, amp, scaler=scaler), x, y, steps, warmup, dev)


class GpuBusy:
    """nvidia-smi's utilization.gpu sampled every 100 ms (the fraction of time a kernel ran)."""

    def __init__(self):
        self.samples: list[float] = []
        self.proc = None
        if shutil.which("nvidia-smi"):
            self.proc = subprocess.Popen(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits", "-i", "0",
                                          "-lms", "100"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            try:
                self.samples.append(float(line.strip()))
            except ValueError:
                pass

    def stop(self) -> dict:
        if self.proc is None:
            return {"gpu_busy": None, "gpu_busy_note": "nvidia-smi not found"}
        self.proc.terminate()
        busy = [s for s in self.samples if s > 0] or [0.0]  # drop start-up samples before the first kernel
        return {"gpu_busy_mean_pct": round(sum(busy) / len(busy), 1), "gpu_busy_samples": len(self.samples)}


def stage_train(c: Check) -> dict:
    from alexnet_kit.train.packed import PackedDataset
    from alexnet_kit.train.synthetic import timed_run

    classes = PackedDataset(c.big).num_classes
    runs = {}
    variants = [("eager", False)] + ([] if c.cpu else [("compile", True)])
    for name, compiled in variants:
        steps, warmup = (6, 2) if c.cpu else (150, 30 if compiled else 20)
        r = recipe_for(c, c.scratch / f"train-{name}", compile=compiled, max_steps=steps, epochs=1)
        busy = GpuBusy() if not c.cpu else None
        res = timed_run(r, c.big, warmup=warmup)
        if busy:
            res.update(busy.stop())
        res["synthetic_step_images_per_s"] = synthetic_step(r, classes, steps=5 if c.cpu else 60, warmup=2 if c.cpu else 15)
        if res["images_per_s"]:
            res["end_to_end_over_synthetic"] = round(res["images_per_s"] / res["synthetic_step_images_per_s"], 3)
        runs[name] = res
    if c.cpu:
        runs["compile"] = {"skipped": "torch.compile on the CPU needs a C++ toolchain and minutes; run on a GPU"}
    ok = all(v.get("images_per_s") for v in runs.values() if "skipped" not in v)
    return {"ok": ok, "runs": runs, "target_images_per_s": 15000}


def stage_towers(c: Check) -> dict:
    import torch

    from alexnet_kit.model import AlexNet, AlexNetConfig
    from alexnet_kit.towers import TowerAlexNet
    from alexnet_kit.train.optim import PaperSGD
    from alexnet_kit.train.trainer import train_step

    dev = c.device + (":0" if c.device == "cuda" else "")
    torch.backends.cudnn.allow_tf32 = False  # compare fp32 with fp32, not two TF32 roundings
    torch.backends.cuda.matmul.allow_tf32 = False
    # kaiming: the paper init leaves the untrained logits near 0, where a relative error means little
    cfg = AlexNetConfig(num_classes=1000, dropout=0.0, init="kaiming", **({} if not c.cpu else MODEL_TINY))
    torch.manual_seed(0)
    grouped = AlexNet(cfg).to(dev)
    towers = TowerAlexNet.from_grouped(grouped, [dev, dev])
    x = torch.randn(16, 3, 224, 224, device=dev) * 50
    grouped.eval(), towers.eval()
    with torch.no_grad():
        a, b = grouped(x), towers(x)
    err = float((a - b).abs().max() / a.abs().max().clamp_min(1e-12))
    grouped.train(), towers.train()
    y = torch.arange(16, device=dev) % 1000
    la, _ = train_step(grouped, PaperSGD(grouped.parameters(), lr=0.01), x, y)
    lb, _ = train_step(towers, PaperSGD(towers.parameters(), lr=0.01), x, y)
    return {"ok": err < 1e-4 and abs(float(la) - float(lb)) < 1e-3, "devices": [dev, dev], "logits_rel_err": err,
            "loss_grouped": float(la), "loss_towers": float(lb)}


def train_args(c: Check, out: Path, *extra) -> list:
    return ["-m", "alexnet_kit", "train", "--recipe", "quickstart", "--data", c.small, "--out", out, "--batch-size", "8",
            "--workers", "1", "--quiet", "--device", c.device, "--model.conv_channels", "16,32,48,48,32",
            "--model.fc_features", "64", "--checkpoint-minutes", "0", *extra]


def stage_ddp(c: Check) -> dict:
    out = c.scratch / "ddp"
    # 48 photos, batch 8: 6 steps an epoch, 3 epochs = 18 steps: the stop agreement at step 16 runs too
    c.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1",
           *train_args(c, out, "--parallel", "data", "--epochs", "3")], timeout=240)
    hist = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines() if l.strip()]
    hist = [h for h in hist if "epoch" in h]
    return {"ok": len(hist) == 3 and all(h.get("val_top1_err") is not None for h in hist),
            "backend": "cpu:gloo,cuda:nccl" if not c.cpu else "gloo", "epochs_logged": len(hist)}


def stage_resume(c: Check) -> dict:
    import torch

    from alexnet_kit.checkpoint import load_checkpoint
    from alexnet_kit.train.training_state import list_states, load_state

    full, cut = c.scratch / "full", c.scratch / "cut"
    epochs = 4 if c.cpu else 12  # a GPU runs the tiny net fast: more epochs so the kill lands mid-run
    common = ["--epochs", str(epochs), "--deterministic", "true", "--checkpoint-every", "2"]
    env = dict(c.env)
    env.pop("CUBLAS_WORKSPACE_CONFIG", None)  # the trainer must set it itself, before CUDA starts
    c.run([sys.executable, *train_args(c, full, *common)], timeout=240, env=env)
    proc = subprocess.Popen([sys.executable, *map(str, train_args(c, cut, *common))], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env=env)
    t0 = time.monotonic()
    while time.monotonic() - t0 < 180:
        states = list_states(cut / "checkpoints")
        if states and int(states[-1].stem.split("-")[1]) >= 8:
            break
        if proc.poll() is not None:
            raise RuntimeError(f"ended before it could be killed: {proc.stderr.read()[-800:]}")
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = load_state(list_states(cut / "checkpoints")[-1])["global_step"]
    c.run([sys.executable, *train_args(c, cut, *common, "--resume")], timeout=240, env=env)
    a, _ = load_checkpoint(full / "last.safetensors")
    b, _ = load_checkpoint(cut / "last.safetensors")
    bitwise = all(torch.equal(a[k], b[k]) for k in a)
    max_diff = max(float((a[k] - b[k]).abs().max()) for k in a)
    st = load_state(list_states(cut / "checkpoints")[-1])
    # the state written on the GPU, continued on the CPU for one more epoch
    cpu_args = [a_ if a_ != c.device else "cpu" for a_ in train_args(c, cut, "--epochs", str(epochs + 1), "--resume")]
    c.run([sys.executable, *cpu_args], timeout=240, env=env)
    steps_after = load_state(list_states(cut / "checkpoints")[-1])["global_step"]
    c.gpu_model = full / "model.safetensors"  # every step of this run ran on the device
    # bitwise on CUDA too: --deterministic true selects deterministic cuDNN/cuBLAS kernels on
    # the same GPU, and the data, dropout and augmentation draws are functions of (seed, step),
    # so a resumed run computes exactly the same kernels on exactly the same inputs
    return {"ok": bitwise, "killed_at_step": killed_at, "resumed_bitwise_equal": bitwise,
            "max_abs_weight_diff": max_diff, "rng_keys": sorted(st["rng"]), "cpu_continued_to_step": steps_after}


def stage_serve(c: Check) -> dict:
    import importlib.util

    gpu_model = c.scratch / "gpu-trained.safetensors"
    trained = getattr(c, "gpu_model", None)
    if trained is None or not Path(trained).is_file():  # the resume stage did not run: one epoch on the device
        out = c.scratch / "serve-train"
        c.run([sys.executable, *train_args(c, out, "--epochs", "1")], timeout=240)
        trained = out / "model.safetensors"
    shutil.copy(trained, gpu_model)
    ev = c.run([sys.executable, "-m", "alexnet_kit", "evaluate", gpu_model, "--data", c.small, "--crops", "10",
                "--device", c.device, "--json", "--quiet"], timeout=240)
    ev_res = json.loads(ev.stdout[ev.stdout.index("{"):])
    from alexnet_kit.paths import example_photos

    photos = example_photos()
    fixed = ["--precision", "fp32"] if c.cpu else []  # the CPU's auto precision measures engines on 200 photos first
    cl = c.run([sys.executable, "-m", "alexnet_kit", "classify", "--model", gpu_model, "--device", c.device, "--engine", "torch",
                *fixed, "--json", "--top", "3", *photos], timeout=240)
    cl_res = json.loads(cl.stdout[cl.stdout.index("{"):] if cl.stdout.lstrip().startswith("{") else cl.stdout[cl.stdout.index("["):])
    res = {"evaluate_10crop": {k: ev_res.get(k) for k in ("photos", "top1_err", "top5_err", "crops")},
           "classify_photos": len(photos), "classify_json_type": type(cl_res).__name__}
    if importlib.util.find_spec("onnxscript") is None:
        res["export_onnx"] = {"skipped": "onnxscript not installed (torch.onnx's dynamo exporter needs it)"}
        res["ok"] = True
        return res
    ex = c.run([sys.executable, "-m", "alexnet_kit", "export", gpu_model, "--format", "onnx", "--out",
                c.scratch / "gpu-trained.onnx", "--json"], timeout=300)
    res["export_onnx"] = {"ok": True, "tail": ex.stdout.strip()[-400:]}
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", help="folder for gpu-check.json (the log is written there by gpu-check.sh)")
    ap.add_argument("--cpu", action="store_true", help="the CPU-safe parts on a tiny network (what make test runs)")
    ap.add_argument("--budget", type=float, default=None, help="seconds before remaining stages are skipped (default 450 GPU, 300 CPU)")
    ap.add_argument("--stages", default="data,train,towers,ddp,resume,serve")
    args = ap.parse_args()
    stages = {"data": stage_data, "train": stage_train, "towers": stage_towers, "ddp": stage_ddp, "resume": stage_resume,
              "serve": stage_serve}
    requested = [n for n in args.stages.split(",") if n]
    unknown = [n for n in requested if n not in stages]
    if unknown or not requested:
        ap.error(f"--stages: unknown stage(s) {','.join(unknown) or '(none given)'}; known: {','.join(stages)}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    layout = source_layout(Path(tempfile.mkdtemp(prefix="gpu-check-src-")))
    sys.path.insert(0, str(layout))
    os.environ["PYTHONPATH"] = os.pathsep.join([str(layout), *filter(None, [os.environ.get("PYTHONPATH")])])
    os.environ.setdefault("OMP_NUM_THREADS", "1" if args.cpu else os.environ.get("OMP_NUM_THREADS", "4"))
    import torch

    if not args.cpu and not torch.cuda.is_available():
        print("gpu-check: CUDA is not available here (use --cpu for the CPU-safe parts)", file=sys.stderr)
        return 2
    from alexnet_kit.train.trainer import cuda_bf16_native

    c = Check(out, args.cpu, args.budget or (300.0 if args.cpu else 450.0), requested)
    c.env = dict(os.environ)
    c.results["machine"] = {"python": platform.python_version(), "torch": torch.__version__, "cpus": os.cpu_count(),
                            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
                            "bf16_native": cuda_bf16_native() if torch.cuda.is_available() else None,
                            "host": platform.node(), "source": str(REPO)}
    import alexnet_kit.train

    # proof that the symlink layout, not an installed copy, is what runs
    c.results["machine"]["imported_from"] = str(Path(alexnet_kit.train.__file__).parent.parent)
    try:
        for name in requested:
            c.stage(name, stages[name])
    finally:
        shutil.rmtree(c.scratch, ignore_errors=True)
        shutil.rmtree(layout, ignore_errors=True)
    c.save()
    log(f"done in {c.results['seconds']} s: {'all ok' if c.results['ok'] else 'NOT all ok ' + json.dumps(c.results['not_ok'])}; "
        f"{out / 'gpu-check.json'}")
    return 0 if c.results["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
