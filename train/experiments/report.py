"""The results tables of docs/experiments.md, printed from the results JSON files.

    .venv/bin/python -m alexnet_kit.train.experiments.report [experiments/results]

so every number in the docs comes from a file a committed command wrote.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path


def _pm(ms, digits=1) -> str:
    m, s = ms
    return f"{m:.{digits}f} ± {s:.{digits}f}"


def fig1_table(d: dict) -> str:
    rows = ["| activation | learning rate (swept) | epochs to 25% training error, per seed | mean ± sd | final test error |",
            "| --- | --- | --- | --- | --- |"]
    for act in ("relu", "tanh"):
        a = d[act]
        swept = ", ".join(f"{r['lr']:g}" for r in a["sweep"])
        eps = ", ".join(str(e) if e else f">{d['config']['max_epochs']}" for e in a["epochs_to_target"])
        test = ", ".join(f"{r['test_error']:.2f}" for r in a["runs"])
        rows.append(f"| {act} | **{a['lr']:g}** ({swept}) | {eps} | {a['epochs_mean']:.1f} ± {a['epochs_std']:.1f} | {test} |")
    ratio = f"{d['speedup_mean']:.2f} ± {d['speedup_std']:.2f}" + (" (lower bound)" if d["speedup_is_lower_bound"] else "")
    rows.append(f"\nReLU speed-up (tanh epochs / ReLU epochs, per seed): **{ratio}**; paper: about {d['paper']['speedup']:g}. "
                f"{d['train_photos']} training photos, widths {tuple(d['config']['width'])}, init {d['config'].get('init', 'default')}, "
                f"{len(d['relu']['runs'])} seeds, {d['seconds'] / 60:.0f} min on {d['machine']['cpu']} ({d['date_utc']}).")
    return "\n".join(rows)


def ablation_table(d: dict) -> str:
    g, v, paper = d["gain_of_paper_choice"], d["variants"], d["paper"]
    rows = ["| variant | held-out top-1 err, ten-crop | top-5 err, ten-crop | top-1 err, centre crop | final training top-1 err | paper's choice helps by (top-1 points, ours) | paper's claim |",
            "| --- | --- | --- | --- | --- | --- | --- |"]
    for name, row in v.items():
        gain = _pm(g[name]["top1"]) if name in g else "-"
        claim = paper.get(name, {}).get("claim", "reference") if name != "full" else "reference"
        rows.append(f"| {name} | {_pm(row['ten_crop_top1'])} | {_pm(row['ten_crop_top5'])} | {_pm(row['centre_top1'])} | "
                    f"{_pm(row['train_top1_final'])} | {gain} | {claim} |")
    if "centre_crop" in g:
        rows.append(f"| full, centre crop instead of ten | {_pm(v['full']['centre_top1'])} | {_pm(v['full']['centre_top5'])} | - | - | "
                    f"{_pm(g['centre_crop']['top1'])} | {paper['centre_crop']['claim']} |")
    c = d["config"]
    rows.append(f"\n{len(d['classes'])} classes, {d['split']['train']} training / {d['split']['val']} held-out photos; "
                f"channels {tuple(c['channels'])}, fc {c['fc']}, {c['photo']}px photos, {c['crop']}px crops, {c['epochs']} epochs, "
                f"lr {c['lr']:g} (/10 for the last quarter), batch {c['batch']}, {c['seeds']} seeds (mean ± sd); "
                f"{d['seconds'] / 60:.0f} min on {d['machine']['cpu']} ({d['date_utc']}). "
                "A positive 'helps by' means the variant without the paper's choice had the higher error.")
    return "\n".join(rows)


def main(argv=None) -> int:
    folder = Path((argv or sys.argv[1:] or ["experiments/results"])[0])
    for name, fn in (("fig1_relu_tanh", fig1_table), ("fig1_relu_tanh_init-he", fig1_table), ("ablations", ablation_table)):
        p = folder / f"{name}.json"
        if p.exists():
            print(f"### {name}\n\n{fn(json.loads(p.read_text()))}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
