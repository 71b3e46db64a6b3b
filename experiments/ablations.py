"""Reproduce the ablations on Caltech-101 (see docs/experiments.md for the time).

    .venv/bin/python experiments/ablations.py [--size tiny|default|full] [--out experiments/results] ...

Same as `alexnet-kit reproduce ablations ...`; the code lives in
train/experiments/ (installed as alexnet_kit.train.experiments).
"""
import sys

from alexnet_kit.cli import main

if __name__ == "__main__":
    sys.exit(main(["reproduce", "ablations", *sys.argv[1:]]))
