"""Which trained model Figures 3 and 4 show: the one named, else the newest in runs/, else ours."""
from __future__ import annotations

from pathlib import Path

from alexnet_kit.errors import AlexKitError

from .common import ROOT

ABLATION_MODEL = ROOT / "experiments" / "results" / "caltech_full_seed0.safetensors"


def find_model(model: str | Path | None) -> Path:
    """``model`` if given; else the newest ``model.safetensors`` (then any ``*.safetensors``) under runs/;
    else the ablations' full model."""
    if model:
        p = Path(model)
        if not p.is_file():
            raise AlexKitError(f"{p}: no such checkpoint")
        return p
    runs = ROOT / "runs"
    if runs.is_dir():
        # alexnet-kit train writes the best weights to model.safetensors (last.safetensors is the latest)
        for pattern in ("model.safetensors", "*.safetensors"):
            found = sorted((p for p in runs.rglob(pattern) if not p.name.startswith(".")), key=lambda p: p.stat().st_mtime)
            if found:
                return found[-1]
    if ABLATION_MODEL.is_file():
        return ABLATION_MODEL
    raise AlexKitError("no trained checkpoint found: pass --model, train one (alexnet-kit train), "
                       "or run `alexnet-kit reproduce ablations` (it saves its full model)")
