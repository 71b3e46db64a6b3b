"""Figure 3: the first-layer kernels of a trained network, one block per tower.

The paper shows the 96 11x11x3 kernels, GPU 1's 48 above GPU 2's 48, and
notes the towers specialise: "the kernels on GPU 1 are largely
colour-agnostic, while the kernels on GPU 2 are largely colour-specific"
(§6.1). Besides the picture we measure that: a kernel's colourfulness is the
share of its energy that is not in the mean over its RGB channels (0 for a
grey kernel); the JSON gives it per tower.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from alexnet_kit.apps.figures import kernel_grid
from alexnet_kit.checkpoint import load_model, weights_fingerprint

from .common import savefig, write_results
from .models import find_model

NAME = "fig3_kernels"


def colourfulness(weight: np.ndarray) -> np.ndarray:
    """(K, 3, h, w) -> (K,): ||w - grey(w)||^2 / ||w||^2, grey(w) = the channel mean at each pixel."""
    w = np.asarray(weight, np.float64)
    w = w - w.mean(axis=(1, 2, 3), keepdims=True)  # a constant offset is not a colour
    grey = w.mean(axis=1, keepdims=True)
    total = (w ** 2).sum(axis=(1, 2, 3))
    return ((w - grey) ** 2).sum(axis=(1, 2, 3)) / np.maximum(total, 1e-12)


def run(out: str | Path = "experiments/results", model: str | Path | None = None, size: str = "default", log=print) -> dict:
    import matplotlib  # here, not at the top: matplotlib is an optional extra (alexnet-kit[train]), slow to import

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = find_model(model)
    net, meta = load_model(path)
    w = net.conv1.weight.detach().float().numpy()
    towers = meta.config.towers
    grid = kernel_grid(w, towers=towers, columns=min(16, w.shape[0] // towers), scale=4 if w.shape[2] >= 11 else 6)
    col = colourfulness(w)
    per = w.shape[0] // towers
    tower_stats = [{"tower": t, "kernels": per, "colourfulness_mean": float(col[t * per:(t + 1) * per].mean()),
                    "colourfulness_median": float(np.median(col[t * per:(t + 1) * per]))} for t in range(towers)]
    out = Path(out)
    fig, ax = plt.subplots(figsize=(grid.shape[1] / 90 + 0.5, grid.shape[0] / 90 + 0.8))
    ax.imshow(grid, interpolation="nearest")
    ax.set_axis_off()
    stats = "; ".join(f"tower {s['tower']}: colourfulness {s['colourfulness_mean']:.2f}" for s in tower_stats)
    ax.set_title(f"Figure 3: {w.shape[0]} conv1 kernels {w.shape[1]}x{w.shape[2]}x{w.shape[3]}"
                 f" ({'tower 0 on top' if towers > 1 else 'one tower'})\n{path.name}, "
                 f"{'trained' if meta.trained else 'UNTRAINED'}; {stats}", fontsize=8)
    savefig(fig, out / f"{NAME}.png")
    plt.close(fig)
    results = {"model": str(path), "fingerprint": weights_fingerprint(path), "trained": meta.trained, "provenance": {k: v for k, v in meta.provenance.items() if k != "train_files"},
               "kernels": int(w.shape[0]), "kernel_shape": list(w.shape[1:]), "towers": towers,
               "tower_colourfulness": tower_stats, "kernel_colourfulness": col.tolist(),
               "paper": {"claim": "96 kernels 11x11x3; tower 0 (GPU 1) largely colour-agnostic, tower 1 (GPU 2) largely colour-specific (§6.1)"}}
    write_results(out, NAME, results)
    log(f"Figure 3: {w.shape[0]} kernels of {path} -> {out / (NAME + '.png')}; {stats}")
    return results
