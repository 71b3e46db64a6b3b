"""Which engine and precision serve a model on this machine, verified, never assumed: :func:`choose`.

``choose(model, engine, precision)`` turns a model file, a wish and this
machine into a :class:`~.selection.Selection`; ``selection.open()`` loads it.
The parts: :mod:`.candidates` (what can run the file here), :mod:`.gate`
(the thresholds and the measurement on real photos), :mod:`.measurements`
(the JSON sidecar), :mod:`.timing` and :mod:`.messages` (every sentence).

The default, for the library and the CLI alike
-------------------------------------------------
One rule: *use what this machine has verified for this model; measure only
when asked to choose.*

* No wish (``engine=None, precision=None``, the library's default): the
  fastest path whose stored measurement for this model and CPU passes the
  gate, else the fp32 reference. Nothing is measured and nothing is written,
  so ``Classifier.load("m.onnx")`` is quick and repeatable, and once the CLI
  has measured the model the library runs what the CLI runs.
* A wish, ``auto`` included (the CLI always passes one: ``--engine auto
  --precision auto`` by default): the candidates it allows that have no
  stored measurement are measured once against fp32 on real photos (tens of
  seconds, said on the log) and stored; then the fastest that passes runs.
  A precision named explicitly that fails the gate is refused in one line.
* ``measure=False`` keeps a wish from measuring (an index's own extraction:
  its precision is given, the engine comes from the store or the reference);
  a precision other than fp32 named explicitly is verified either way.

Measuring is what a command-line user asked for by running the tool on a
new model; a library call that silently spends a minute and writes a file
beside the model would surprise a program, so the library measures only
when given a wish.
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch

from . import cpu, messages
from .candidates import ENGINES, Candidate, candidates, engine_available, is_int8_export, model_files
from .errors import GateRefused, SelectionRefused, WishError
from .gate import Gate, gate_photos, measure_candidates
from .loaders import open_path
from .measurements import speed_at, stored, write_measurements
from .messages import stderr_log  # the CLI and the demo import it from here too
from .precision import Precision
from .selection import Selection
from .timing import retime

Log = Callable[[str], None]


@dataclass(frozen=True)
class Wish:
    """What the caller asked for: an engine (or ``auto``), a precision (None: ``auto``), and whether
    paths not measured yet may be measured now (only when a wish was given)."""

    engine: str = "auto"
    precision: Precision | None = None
    measure: bool = False

    @classmethod
    def of(cls, engine: str | None, precision: "str | Precision | None", measure: bool | None = None) -> "Wish":
        asked = (engine is not None or precision is not None) if measure is None else measure
        engine = engine or "auto"
        if engine not in ENGINES + ("auto",):
            raise WishError(messages.unknown("engine", engine, ENGINES))
        if precision in (None, "auto"):
            return cls(engine, None, asked)
        if precision not in tuple(Precision):
            raise WishError(messages.unknown("precision", str(precision), tuple(Precision)))
        return cls(engine, Precision(precision), asked)

    def check(self) -> None:
        """Refuse, before anything loads, what cannot run on this machine at all."""
        if self.engine != "auto" and not engine_available(self.engine):
            raise WishError(messages.say("not_installed", engine=self.engine))
        if self.precision is Precision.BF16 and not cpu.native_bf16():
            raise WishError(messages.say("bf16_not_native", cpu=cpu.cpuinfo()[0]))


def choose(model: str | os.PathLike, engine: str | None = None, precision: "str | Precision | None" = None, *,
           device: str = "cpu", batch: int = 80, threads: int | None = None, gate: Gate | None = None,
           photos: Sequence[Path] | None = None, log: Log | None = None,
           allow: Sequence[Precision] | None = None, measure: bool | None = None) -> Selection:
    """The :class:`Selection` that serves ``model`` here (see the module's docstring for the default).

    ``batch``: crops per forward call (sets the OpenVINO hint and the speed compared). ``log``: where to
    say that a one-time measurement is running. ``allow``: the precisions ``auto`` may pick (e.g. only
    the index's own when the features query an index: int8 features are another model's). ``measure``:
    whether paths not measured yet may be measured now (default: when a wish is given); a precision other
    than fp32 asked for by name is verified either way.
    """
    model = Path(model)
    wish = Wish.of(engine, precision, measure)
    wish.check()
    make = functools.partial(Selection, model=model, device=device, batch=batch, threads=threads)
    if torch.device(device).type != "cpu":
        return _off_cpu(model, wish, device, make)
    every, ref = candidates(model)
    chosen, precision = _wanted(model, every, wish, allow)
    if ref is None or (len(chosen) == 1 and chosen[0].precision is Precision.FP32):
        c = chosen[0]
        reason = (messages.reference(c.name, len(every) == 1) if c.precision is Precision.FP32
                  else messages.say("unverified_int8", name=c.name, stem=model.name[: -len(".int8.onnx")]))
        return make(engine=c.engine, precision=c.precision, path=c.path, reason=reason)
    gate = gate or Gate.from_env()
    have = {c: stored(model, c, ref, cpu.machine_class()) for c in chosen}
    if not wish.measure and wish.precision in (None, Precision.FP32):
        return _from_store(chosen, ref, have, gate, make)
    todo = [c for c in chosen if have[c] is None]
    if todo and photos is None:
        photos = gate_photos()
        if not photos and precision in (None, Precision.FP32) and ref in chosen:
            # nothing real to verify with (an installed package, no data): the reference, and say why
            return make(engine=ref.engine, precision=ref.precision, path=ref.path,
                        reason=messages.say("no_photos_reference", name=ref.name))
    if todo:
        have.update(measure_candidates(model, todo, ref, device=device, threads=threads, batch=batch, photos=photos, log=log))
    passing = [c for c in chosen if c == ref or gate.failure(have[c]) is None]
    if not passing:
        c = chosen[0] if len(chosen) == 1 else max(chosen, key=lambda c: have[c]["top1_agreement"])
        names = c.name if len(chosen) == 1 else " / ".join(x.name for x in chosen)
        raise GateRefused(model, messages.say("gate_refusal", names=names, failure=gate.failure(have[c]),
                                              photos=have[c]["photos"]))
    if len(passing) > 1:
        _time_at(model, [c for c in passing if speed_at(have[c], batch) is None], have, device, threads, batch, log)
    return _verdict(chosen, passing, ref, have, make)


def _off_cpu(model: Path, wish: Wish, device: str, make) -> Selection:
    """Off the CPU the file runs on its own engine, as exported: a wish for another is refused."""
    if wish.precision not in (None, Precision.FP32):
        raise WishError(messages.say("precision_off_cpu", precision=wish.precision, device=device))
    runs = "onnxruntime" if model.suffix.lower() == ".onnx" else "torch"
    if wish.engine not in ("auto", runs):
        raise WishError(messages.say("engine_off_cpu", engine=wish.engine, device=device, name=model.name, runs=runs))
    precision = Precision.INT8 if is_int8_export(model) else Precision.FP32
    return make(engine=runs, precision=precision, path=model, reason=messages.say("off_cpu", device=device, runs=runs),
                own_engine=True)


def _wanted(model: Path, every: list[Candidate], wish: Wish,
            allow: Sequence[Precision] | None) -> tuple[list[Candidate], Precision | None]:
    """The candidates the wish allows, and the precision asked for (an int8 export named: int8)."""
    precision = wish.precision
    if precision is None and is_int8_export(model):
        precision = Precision.INT8  # the user named the int8 export: its fp32 sibling is only the reference
    chosen = [c for c in every if wish.engine in ("auto", c.engine) and precision in (None, c.precision)
              and (precision is not None or allow is None or c.precision in allow)]
    if not chosen:
        fp32, int8 = model_files(model) if model.suffix.lower() == ".onnx" else (None, None)
        raise SelectionRefused(model, messages.cannot_run(model, wish.engine, precision or "auto", every, int8, fp32))
    return chosen, precision


def _from_store(chosen: list[Candidate], ref: Candidate, have: dict, gate: Gate, make) -> Selection:
    """No wish: the fastest stored path that passes the gate, else the reference, measuring nothing."""
    passing = [c for c in chosen if have[c] is not None and (c == ref or gate.failure(have[c]) is None)]
    if passing:
        return _verdict(chosen, passing, ref, have, make)
    c = ref if ref in chosen else chosen[0]
    reason = messages.say("not_measured_reference" if c == ref else "unmeasured", name=c.name)
    return make(engine=c.engine, precision=c.precision, path=c.path, reason=reason)


def _time_at(model: Path, untimed: list[Candidate], have: dict, device: str, threads: int | None, batch: int,
             log: Log | None) -> None:
    """Time the passing candidates not yet timed at this batch size (the gate's verdict is kept)."""
    if not untimed:
        return
    if log:
        log(messages.say("timing", names=", ".join(c.name for c in untimed), batch=batch))
    for c in untimed:
        engine = open_path(c.engine, c.precision, c.path, device, threads, batch)
        have[c] = retime(engine, have[c], batch)
        del engine  # one session at a time
    write_measurements(model, [have[c] for c in untimed])


def _verdict(chosen: list[Candidate], passing: list[Candidate], ref: Candidate, have: dict, make) -> Selection:
    """The fastest passing candidate at this batch size, and why, in words."""
    batch = make.keywords["batch"]
    speeds = {c: speed_at(have[c], batch) if have[c] is not None else None for c in chosen}
    for c in chosen:  # the speed at this batch where it was timed (only one passing candidate needs none)
        if speeds[c] is not None:
            have[c] = {**have[c], "batch": batch, "crops_per_s": speeds[c]}
    best = max(passing, key=lambda c: have[c]["crops_per_s"])
    others = ", ".join(c.name + ("" if speeds[c] is None else f" {have[c]['crops_per_s']:.0f}")
                       + ("" if c in passing else " (fails the gate)" if have[c] is not None else " (not measured)")
                       for c in chosen if c != best)
    m = have[best]
    return make(engine=best.engine, precision=best.precision, path=best.path, measurement=m,
                reason=messages.measured(best.name, m, others, best == ref))


__all__ = ["Wish", "choose", "stderr_log", "Selection", "Gate"]
