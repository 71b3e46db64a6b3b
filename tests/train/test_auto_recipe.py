"""--recipe auto: its choices are the documented rule (docs/training.md's table, row by row), a pure
function of the data's size and the measured speed; the command line's choices are kept."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from alexnet_kit.cli import build_parser
from alexnet_kit.train import auto_recipe
from alexnet_kit.train.auto_recipe import LEVELS, choose
from alexnet_kit.train.recipe import apply_overrides, given_fields, load_recipe, validate
from alexnet_kit.train.schedule import parse_duration

from helpers import ROOT

MARKER = "<!-- auto rule: tests/train/test_auto_recipe.py checks every row against train/auto_recipe.py -->"


def documented_rows() -> list[list[str]]:
    text = (ROOT / "docs" / "training.md").read_text(encoding="utf-8")
    assert MARKER in text, "docs/training.md lost the auto rule's table"
    lines = text.split(MARKER, 1)[1].strip().splitlines()
    rows = []
    for line in lines[2:]:  # after the header and its separator
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip().strip("|").split("|")])
    return rows


def test_the_documented_table_is_what_auto_chooses():
    rows = documented_rows()
    assert len(rows) >= 8
    for photos, classes, speed, amp, budget, width, conv, fc, batch, passes, aug in rows:
        num = lambda t: int(t.replace(",", ""))  # noqa: E731
        c = choose(num(photos), num(classes), float(speed) if speed != "-" else None,
                   parse_duration(budget) if budget != "none" else None, amp=amp)
        got = [c.level, ",".join(map(str, c.conv_channels)), str(c.fc_features), str(c.batch_size),
               f"{c.epochs:.1f}" if c.epochs is not None else "-", c.augmentation]
        assert got == [width, conv, fc, batch, passes, aug], (photos, classes, speed, budget)


def test_the_rule_is_monotone_in_speed_and_time():
    """More speed or more time never narrows the network; more data never makes the augmentation stronger."""
    order = [lv.name for lv in LEVELS]
    for photos in (500, 4_400, 50_000, 1_281_167):
        widths = [order.index(choose(photos, 100, speed, 1200).level) for speed in (5, 20, 80, 400, 5000)]
        assert widths == sorted(widths)
        widths = [order.index(choose(photos, 100, 40, budget).level) for budget in (60, 300, 1200, 7200)]
        assert widths == sorted(widths)
    strength = ["light", "medium", "strong"]
    augs = [strength.index(choose(photos, 100, 40, 1200).augmentation) for photos in (300, 3_000, 30_000, 300_000)]
    assert augs == sorted(augs, reverse=True)


def fake_data(photos: int, classes: int):
    return SimpleNamespace(num_classes=classes, split=lambda name: range(photos if name == "train" else photos // 4))


def test_auto_keeps_what_the_command_line_gives_and_says_what_it_chose(monkeypatch, capsys):
    from alexnet_kit.engines import cpu

    # fp32 on one thread is the fastest here (two threads wait for each other on a busy machine)
    monkeypatch.setattr(auto_recipe, "probe", lambda classes, device, combos, **_: {
        (a, n): {"fp32": 30.0, "bf16": 20.0}[a] / (1 if n == 1 else 3) for a, n in combos})
    monkeypatch.setattr(cpu, "usable_cores", lambda: 2)
    args = build_parser().parse_args(["train", "--recipe", "auto", "--budget", "5m", "--batch-size", "16", "--model.fc_features", "768"])
    r = apply_overrides(load_recipe("auto"), args)
    c = auto_recipe.apply(r, fake_data(4_396, 100), given_fields(args))
    validate(r)
    want = choose(4_396, 100, 30.0, 300, amp="fp32")
    assert (c.level, c.batch_size) == (want.level, want.batch_size)
    assert r.batch_size == 16 and r.model["fc_features"] == 768  # given: kept
    assert tuple(r.model["conv_channels"]) == want.conv_channels and r.crop == want.crop  # the rest: the rule's
    assert r.label_smoothing == want.label_smoothing
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("auto: 4,396 photos of 100 classes; width s trains 30 photos/s here in fp32 1 thread")
    assert f"width {want.level}" in err and "kept from the command line: model.fc_features, batch_size" in err
    # the fastest precision and thread count of the probe are kept as --amp and --threads (bf16 is probed only
    # where the hardware has it)
    assert (r.amp, r.threads) == ("off", 1) and "fp32 2 threads 10" in err


def test_a_resumed_auto_run_keeps_its_first_choices(tmp_path, capsys):
    from alexnet_kit.train import training_state

    first = load_recipe("auto")
    first.model = dict(first.model, conv_channels=[24, 48, 72, 72, 48], fc_features=512)
    first.batch_size, first.crop, first.label_smoothing, first.amp, first.threads = 32, "rrc", 0.1, "off", 1
    training_state.save_state(tmp_path / "run" / "checkpoints", {"global_step": 7, "recipe": first.to_dict()})
    args = build_parser().parse_args(["train", "--recipe", "auto", "--out", str(tmp_path / "run"), "--resume"])
    r = apply_overrides(load_recipe("auto"), args)
    assert auto_recipe.apply(r, fake_data(4_396, 100), given_fields(args), resume="latest") is None  # no probe
    assert r.model["conv_channels"] == (24, 48, 72, 72, 48) and (r.crop, r.label_smoothing, r.batch_size, r.threads) == ("rrc", 0.1, 32, 1)
    assert capsys.readouterr().err.startswith("auto: as chosen when the run started")


def test_auto_refuses_data_parallel():
    from alexnet_kit.errors import AlexKitError

    r = load_recipe("auto")
    r.parallel = "data"
    with pytest.raises(AlexKitError, match="ranks could choose differently"):
        auto_recipe.apply(r, fake_data(100, 2), set())


@pytest.mark.slow
def test_the_probe_measures_a_training_step():
    import torch

    threads = torch.get_num_threads()
    speeds = auto_recipe.probe(3, torch.device("cpu"), (("fp32", 1), ("fp32", 0)), steps=1, batch=2)
    assert set(speeds) == {("fp32", 1), ("fp32", 0)} and min(speeds.values()) > 0
    assert torch.get_num_threads() == threads  # restored
