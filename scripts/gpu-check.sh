#!/usr/bin/env bash
# The one GPU check: train (bf16, channels_last, compile off/on), towers,
# DDP with NCCL, kill + resume, evaluate/classify/export on the GPU, in at most 8 minutes.
#
#   scripts/gpu-check.sh OUTDIR          # on a machine with CUDA torch: OUTDIR/gpu-check.json + gpu-check.log
#   scripts/gpu-check.sh OUTDIR --cpu    # the CPU-safe parts on a tiny network (make test runs this)
#
# Runs from the source tree as it is (nothing installed): see scripts/gpu_check.py.
# PYTHON picks the interpreter (default python3). Exit 0 when every stage passed.
set -uo pipefail
if [ $# -lt 1 ]; then
    echo "usage: $0 OUTDIR [--cpu] [--budget SECONDS] [--stages data,train,...]" >&2
    exit 2
fi
OUT=$1
shift
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PY=${PYTHON:-python3}
mkdir -p "$OUT"
# 8-minute hard stop for the whole check (the stages also skip themselves past --budget)
timeout --signal=TERM --kill-after=20 480 "$PY" -u "$HERE/gpu_check.py" "$OUT" "$@" 2>&1 | tee "$OUT/gpu-check.log"
exit "${PIPESTATUS[0]}"
