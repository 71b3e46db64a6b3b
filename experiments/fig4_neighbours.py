"""Reproduce Figure 4, top-5 and fc7 nearest neighbours (a minute).

    .venv/bin/python experiments/fig4_neighbours.py [--size tiny|default|full] [--out experiments/results] ...

Same as `alexnet-kit reproduce fig4 ...`; the code lives in
train/experiments/ (installed as alexnet_kit.train.experiments).
"""
import sys

from alexnet_kit.cli import main

if __name__ == "__main__":
    sys.exit(main(["reproduce", "fig4", *sys.argv[1:]]))
