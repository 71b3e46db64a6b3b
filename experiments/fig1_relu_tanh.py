"""Reproduce Figure 1, ReLU vs tanh on CIFAR-10 (about 15-25 min on 2 CPU cores).

    .venv/bin/python experiments/fig1_relu_tanh.py [--size tiny|default|full] [--out experiments/results] ...

Same as `alexnet-kit reproduce fig1 ...`; the code lives in
train/experiments/ (installed as alexnet_kit.train.experiments).
"""
import sys

from alexnet_kit.cli import main

if __name__ == "__main__":
    sys.exit(main(["reproduce", "fig1", *sys.argv[1:]]))
