"""``alexnet-kit``: one subcommand per job, one module per subcommand.

Each module in this package defines ``register(subparsers)``, which adds its
parser and sets ``run``; a module imports nothing heavy at import time, so
``alexnet-kit classify`` never pays for the training stack or Gradio. User
errors (:class:`~alexnet_kit.errors.AlexKitError`) become one line on stderr
and exit status 2. A long job stopped by SIGTERM or SIGINT saves its work and
exits 128 + the signal's number (:mod:`alexnet_kit.interrupt`).
"""
from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from .. import __version__
from ..errors import AlexKitError
from ..interrupt import Interrupted

PROG = "alexnet-kit"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="The network of Krizhevsky, Sutskever & Hinton (2012): train, export, classify, search.",
        epilog=f"Run '{PROG} COMMAND --help' for a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except AlexKitError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    except Interrupted as e:  # the job saved its work first
        print(f"{PROG}: {e}", file=sys.stderr)
        return e.exit_status
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `alexnet-kit classify ... | head`
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
