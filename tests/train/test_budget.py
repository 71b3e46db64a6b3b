"""Training to a wall-clock budget: the schedule ends at the deadline, the end fits in the budget,
a stop and resume keeps what is left, and the ranks agree on the clock."""
from __future__ import annotations

import math
import os
import subprocess
import time
from pathlib import Path

import pytest
import torch

from alexnet_kit.errors import AlexKitError
from alexnet_kit.train.packed import PackedDataset
from alexnet_kit.train.schedule import Budget, Schedule, format_duration, lr_factor, parse_duration, resolve_kind
from alexnet_kit.train.trainer import Trainer
from alexnet_kit.train.training_state import latest_state, load_state

from helpers import tiny_packed, tiny_recipe, train_cmd


class FakeClock:
    def __init__(self, t: float = 1000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture(scope="module")
def packed(tmp_path_factory) -> Path:
    return tiny_packed(tmp_path_factory.mktemp("budget") / "packed")


@pytest.mark.parametrize("kind", ["cosine", "linear"])
def test_the_schedule_reaches_its_end_at_the_deadline_on_a_fake_clock(kind):
    clock = FakeClock()
    b = Budget(100.0, started=clock(), clock=clock, val_photos=64, state_bytes=0)
    s = Schedule(kind, 0.02, warmup=0.05)
    clock.t += 5.0  # start-up: the schedule starts at the first step, not at the command's start
    lrs, steps = [], 0
    while True:
        clock.t += 0.5
        b.note_step(0.5, 32)
        steps += 1
        if steps == 20:  # the first epoch's end: its evaluation and write, measured
            b.note_eval(2.0)
            b.note_write(1.0)
            clock.t += 2.0
        if b.spent_for(1):
            break
        lrs.append(s.at(b.progress()))
    assert b.train_start == pytest.approx(5.0)
    # the reserve: the measured end (1.2 x (eval + write)), two steps and 1% of the budget
    assert b.reserve() == pytest.approx(1.2 * 3.0 + 2 * 0.5 + 1.0)
    assert b.deadline() + b.reserve() == pytest.approx(100.0)
    # it stopped with one step to go before the deadline, leaving the reserve for the end
    assert b.deadline() - 0.5 <= b.elapsed() < b.deadline() + 1e-9
    assert lrs[0] < 0.02 * 0.2 and max(lrs) == pytest.approx(0.02, rel=0.05)  # warm-up, then the peak
    peak = lrs.index(max(lrs))
    assert all(a >= b_ for a, b_ in zip(lrs[peak:], lrs[peak + 1:]))  # then only down
    assert lrs[-1] < 0.02 * 0.05
    clock.t = 1000.0 + b.deadline()  # at the deadline itself: the end value, 0
    assert b.progress() == 1.0 and s.at(b.progress()) == 0.0
    assert lr_factor(kind, 1.0, 0.05) == 0.0 and lr_factor(kind, 0.05, 0.05) == 1.0
    assert lr_factor(kind, 0.5 + 0.025, 0.05) == pytest.approx(0.5)  # half-way down the decay: half the rate


def test_an_epoch_end_just_before_the_final_one_skips_its_evaluation():
    clock = FakeClock()
    b = Budget(300.0, started=clock(), clock=clock)
    b.note_step(1.0, 32)
    b.note_eval(20.0)
    b.note_write(2.0)
    deadline = b.deadline()
    assert deadline == pytest.approx(300 - 1.2 * 22 - 2 - 3)
    # late: the final evaluation comes within two evaluations' time and more steps fit before it, so this epoch end
    # skips its evaluation and training goes on to the deadline; an end that evaluates stops the run when no
    # further step and end fit after it
    for left, late, stop_after_evaluating in [(100, False, False), (39, True, False), (21.5, True, True), (2.5, True, True),
                                              (1.5, False, True)]:
        clock.t = 1000.0 + deadline - left
        assert b.late() == late, left
        assert (b.vote(1, epoch_end=True) == (1.0,)) == stop_after_evaluating, left
        if late:  # without the evaluation the end is cheap: training goes on
            assert b.vote(1, epoch_end=False) == (b.progress(),) and b.progress() < 1


def test_durations_and_the_auto_schedule():
    assert [parse_duration(t) for t in ("90s", "20m", "2h", "1h30m", "300", "1.5h")] == [90, 1200, 7200, 5400, 300, 5400]
    for bad in ("", "soon", "0", "-5", "20x"):
        with pytest.raises(AlexKitError, match="budget"):
            parse_duration(bad)
    assert format_duration(75) == "1:15" and format_duration(3725) == "1:02:05" and format_duration(-4) == "0:00"
    assert resolve_kind("auto", budget=False) == "plateau"  # §5 when no budget
    assert resolve_kind("auto", budget=True) in ("cosine", "linear") and resolve_kind("plateau", budget=True) == "plateau"
    # the plateau's state of a training state written before there were other schedules loads as it is
    s = Schedule("plateau", 0.01)
    s.load_state_dict({"lr": 0.001, "best": 0.3, "bad_epochs": 1, "drops": 1})
    assert s.lr == 0.001 and s.drops == 1 and not s.timed and s.at(0.7) == 0.001


@pytest.mark.slow
def test_a_stop_and_resume_keeps_the_remaining_budget(packed, tmp_path):
    r = tiny_recipe(tmp_path / "run", batch_size=4, workers=0, threads=1, budget="1h", schedule="cosine", max_steps=2)
    t = Trainer(r, PackedDataset(packed), progress=False, started=time.monotonic() - 100.0)  # 100 s already spent
    t.setup()
    try:
        assert t.train() == "max_steps"  # stopped (a signal stops the same way, saving the state)
    finally:
        t.cleanup()
    st = load_state(latest_state(t.ckpt_dir))
    spent, progress = st["budget"]["elapsed"], st["budget"]["progress"]
    assert 100.0 < spent < 160.0 and 0 < progress < 0.1
    r2 = tiny_recipe(tmp_path / "run", batch_size=4, workers=0, threads=1, budget="1h", schedule="cosine", max_steps=3)
    u = Trainer(r2, PackedDataset(packed), resume="latest", progress=False)
    u.setup()
    try:
        assert u.budget.spent == spent and u._progress == progress  # carried over, not restarted
        assert 3600 - spent - 5 < u.budget.left() <= 3600 - spent
        assert u.train() == "max_steps"
    finally:
        u.cleanup()
    after = load_state(latest_state(u.ckpt_dir))["budget"]
    assert after["elapsed"] > spent and after["train_start"] == st["budget"]["train_start"]


def test_the_ranks_agree_on_the_budget_clock(tmp_path):
    """StopVote carries the budget's progress with the signal, the largest over the ranks, a window late."""
    import torch.distributed as tdist

    from alexnet_kit.train.monitor import Meter
    from alexnet_kit.train.parallel import DistInfo, StopVote

    from helpers import free_port

    tdist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{free_port()}", rank=0, world_size=1)
    try:
        vote = StopVote(DistInfo(collective=True), torch.device("cpu"), every=2)
        assert vote.at_step(1, 0, (0.3,)) == (0, None)  # not a voting step
        assert vote.at_step(2, 0, (0.4,)) == (0, None)  # the first vote: nothing read yet
        assert vote.at_step(4, 15, (0.6,)) == (0, (0.4,))  # the previous window's vote
        assert vote.at_step(6, 0, (1.0,)) == (15, (0.6,))
        totals, stop, clock = vote.at_epoch_end(Meter.zeros(torch.device("cpu")), 0, (1.0,))
        assert stop == 0 and clock == (1.0,) and totals["n"] == 0
    finally:
        tdist.destroy_process_group()


@pytest.mark.slow
def test_a_budget_run_writes_its_final_model_before_the_deadline(packed, tmp_path):
    out, budget = tmp_path / "run", 20.0
    t0 = time.time()
    run = subprocess.run(train_cmd(packed, out, "--budget", "20s", "--workers", "0", "--schedule", "linear"), capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"), timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.startswith("budget: ") and "of the 20s budget" in run.stdout, run.stdout
    for name in ("model.safetensors", "last.safetensors"):
        assert (out / name).stat().st_mtime < t0 + budget, name  # on disk before the budget ends
    st = load_state(latest_state(out / "checkpoints"))
    assert 0.7 * budget < st["budget"]["elapsed"] < budget  # it used the budget, and the end fitted in it
    last = st["history"][-1]
    assert last["lr"] < 0.01 * 0.25 and "val_top1_err" in last  # decayed towards 0; the final evaluation ran
    assert st["epoch"] > 3 and math.isfinite(last["train_loss"])


@pytest.mark.slow
def test_without_a_budget_cosine_runs_over_the_planned_steps(packed, tmp_path):
    r = tiny_recipe(tmp_path / "run", batch_size=4, workers=0, threads=1, epochs=2, schedule="cosine", warmup=0.0)
    t = Trainer(r, PackedDataset(packed), progress=False)
    t.setup()
    try:
        assert t.train() == "done" and t.budget is None
    finally:
        t.cleanup()
    # 2 epochs of 3 steps: the lr of step 3 of 6 is half the peak, of step 6 the end value, 0
    assert [row["lr"] for row in t.history] == pytest.approx([0.005, 0.0], abs=1e-12)
    assert t.model_meta().provenance["schedule"] == "cosine"
