"""The arithmetic a model runs in: one :class:`Precision` wherever it is recorded.

Sidecars, artifacts' envelopes, index settings, features files and the demo
all record a precision as one of ``fp32``, ``bf16`` or ``int8``. An int8
artifact also says how its activations were quantised (``int8-static`` or
``int8-dynamic`` in its envelope): that is the *mode* of an int8 precision,
read with :func:`int8_mode`, never a precision of its own.
"""
from __future__ import annotations

import enum

# How closely a precision other than fp32 must agree with fp32 on real photos: two thresholds, for two jobs.
#: Serving (the precision gate, :mod:`.gate`): under ``auto`` a faster precision silently *replaces* fp32,
#: so it must give fp32's top-1 label on nearly every photo (99.5%) and keep the features search ranks by
#: (mean fc7 cosine 0.999).
SERVING_MIN_TOP1 = 0.995
SERVING_MIN_COSINE = 0.999
#: Export (``alexnet-kit export --int8``): int8 is asked for by name and only writes a file; this catches a
#: broken quantisation (calibration gone wrong) on the few verification photos. Whether that file may then
#: serve in place of fp32 is the serving gate's call, on each CPU, with the thresholds above.
EXPORT_INT8_MIN_TOP1 = 0.9

#: how an int8 artifact's activation ranges were found (export --int8-mode)
INT8_MODES = ("static", "dynamic")


class Precision(enum.StrEnum):
    """fp32 (the reference), bf16 (native on CPUs with amx_bf16/avx512_bf16) or int8 (a quantised export)."""

    FP32 = "fp32"
    BF16 = "bf16"
    INT8 = "int8"

    @classmethod
    def parse(cls, text: "str | Precision | None") -> "Precision":
        """``fp32``, ``bf16``, ``int8`` or an artifact's ``int8-static``/``int8-dynamic``; None is fp32
        (what a file that records no precision computes). ValueError for anything else."""
        if text is None:
            return cls.FP32
        try:
            return _LABELS[str(text)]
        except KeyError:
            raise ValueError(f"unknown precision {text!r} (expected one of: {', '.join(cls)})") from None

    def label(self, mode: str | None = None) -> str:
        """What an artifact's envelope records: the precision, with the int8 mode when there is one."""
        if self is Precision.INT8 and mode is not None:
            if mode not in INT8_MODES:
                raise ValueError(f"int8 mode must be one of {INT8_MODES}")
            return f"int8-{mode}"
        return self.value


_LABELS: dict[str, Precision] = {p.value: p for p in Precision} | {f"int8-{m}": Precision.INT8 for m in INT8_MODES}


def int8_mode(label: str) -> str | None:
    """``static`` or ``dynamic`` for an int8 artifact's label, None for any other precision."""
    return next((m for m in INT8_MODES if label == Precision.INT8.label(m)), None)


def of_fingerprint(fingerprint: str) -> Precision:
    """int8 for an int8 artifact's fingerprint (``<weights>-int8-<mode>``, its features are another model's),
    else fp32: what a record that predates precisions computed."""
    return Precision.INT8 if any(fingerprint.endswith("-" + Precision.INT8.label(m)) for m in INT8_MODES) else Precision.FP32
