"""Reproduce Figure 3, the first-layer kernels (seconds).

    .venv/bin/python experiments/fig3_kernels.py [--size tiny|default|full] [--out experiments/results] ...

Same as `alexnet-kit reproduce fig3 ...`; the code lives in
train/experiments/ (installed as alexnet_kit.train.experiments).
"""
import sys

from alexnet_kit.cli import main

if __name__ == "__main__":
    sys.exit(main(["reproduce", "fig3", *sys.argv[1:]]))
