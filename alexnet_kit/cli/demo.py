"""``alexnet-kit demo``: the Gradio page in the browser (imports Gradio only when run)."""
from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path

from ..engines.messages import stderr_log
from ..errors import AlexKitError
from ..resolve import resolve_index, resolve_model
from ..settings import index_choice
from . import _serving


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="open the browser demo: classify a photo, find similar photos, see the kernels",
        description="Serve a web page (Gradio) to upload, paste or pick a photo and see its top-5 classes "
        "(ten-crop), the most similar photos of an index, the ten crops and the 96 first-layer kernels "
        "(the paper's Figure 3). API endpoints /classify and /similar work from gradio_client. "
        "Binds 127.0.0.1 unless --host says otherwise; there is no public share link.",
    )
    p.add_argument("--model", help=_serving.MODEL_HELP)
    p.add_argument("--index", help="index folder or name (default: $ALEXNET_KIT_INDEX, else index in the config file, else "
                   "the index named 'default' when there is one; without an index the page says how to build one)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only; 0.0.0.0 exposes the demo, with no login, to the network)")
    p.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    p.add_argument("--max-upload-mb", type=float, default=20, help="largest accepted upload in MB (default 20)")
    p.add_argument("--examples", metavar="DIR", help="folder of example photos to offer (default: the example photos shipped with alexnet-kit)")
    p.add_argument("--device", default="cpu", help="torch device for checkpoints, e.g. cuda (default cpu)")
    _serving.add_options(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    index, no_index = _index(args.index)
    if not 0 < args.max_upload_mb <= 1024:
        raise AlexKitError("--max-upload-mb must be between 0 and 1024")
    if not 0 < args.port < 65536:
        raise AlexKitError("--port must be between 1 and 65535")
    examples = _examples(args.examples)
    try:  # here, not at the top: Gradio is an optional extra, and heavy
        from ..apps.demo import launch
        from ..apps.service import DemoService
    except ImportError as e:
        raise AlexKitError(f"the demo needs Gradio ({e}); install it with: pip install 'alexnet-kit[demo]'") from None
    model = resolve_model(args.model)  # after the cheap checks: it may download the default model

    service = DemoService.load(model, index, device=args.device, engine=args.engine, precision=args.precision,
                               log=stderr_log)
    stderr_log(f"engine: {service.selection.reason}")
    if not service.trained:
        print(f"warning: {model} holds untrained (freshly initialised) weights; the page says so", file=sys.stderr)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: binding {args.host}: anyone who can reach this machine can use the demo (no login)", file=sys.stderr)
    try:
        app = launch(service, host=args.host, port=args.port, max_upload_mb=args.max_upload_mb, examples=examples,
                     block=False, quiet=True)
    except OSError as e:  # the port is taken, or the address is not ours
        service.close()
        raise AlexKitError(f"cannot serve on {args.host}:{args.port} ({e})") from None
    where = f", index {index} ({service.index_size()} photos)" if index else f", no index{no_index}"
    print(f"alexnet-kit demo: serving {app.local_url} (model {model}{where}); Ctrl-C to stop", flush=True)
    _serve_until_stopped(app, service)
    return 0


def _index(given: str | None) -> tuple[str | None, str]:
    """(index folder or None, why there is none): a named index must be there; the default one may not be
    built yet (the page works without it and says how to build one)."""
    if given or not index_choice().built_in:
        return str(resolve_index(given)), ""
    try:
        return str(resolve_index()), ""
    except AlexKitError as e:
        return None, f" ({e})"


def _examples(folder: str | None) -> list | None:
    """The photos of ``--examples DIR`` (None: the page's default examples)."""
    from ..images import is_image_path  # here, not at the top: images loads numpy and Pillow

    if not folder:
        return None
    if not Path(folder).is_dir():
        raise AlexKitError(f"{folder}: not a folder of example photos")
    return sorted(p for p in Path(folder).iterdir() if p.is_file() and is_image_path(p))


def _serve_until_stopped(app, service) -> None:
    """Serve until Ctrl-C or SIGTERM (service managers, `kill`), then close both cleanly."""
    def stop(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        while app.is_running:
            time.sleep(0.2)
    except KeyboardInterrupt:
        print("alexnet-kit demo: stopped", file=sys.stderr)
    finally:
        app.close()
        service.close()
