"""A real browser on the demo: Debian's chromium driven by Playwright, and the README screenshot.

    python -m alexnet_kit.apps.screenshot --model M --index I --photo examples/photos/cat.jpg --out docs/img/demo.png

Starts the demo on 127.0.0.1 (a free port), opens it in headless chromium,
uploads the photo, waits for the labels, the similar photos, the ten
crops and the heat map of the top class, and saves a full-page screenshot. The browser is the system's
``/usr/bin/chromium`` (``scripts/install-browser.sh`` installs it); it is
never downloaded (no ``playwright install``).
"""
from __future__ import annotations

import argparse
import socket
import sys
from contextlib import contextmanager
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
# No GPU, no sandbox (root in CI containers), and nothing that phones home.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def browser_page(width: int = 1280, height: int = 1000):
    """A fresh chromium page; closes the browser afterwards."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.set_default_timeout(60_000)
            yield page
        finally:
            browser.close()


def upload_and_wait(page, url: str, photo: str | Path, similar: int) -> None:
    """Open the page, upload ``photo``, wait until the results are on screen."""
    page.goto(url)
    page.locator("#photo input[type=file]").set_input_files(str(photo))
    page.locator("#top5 dt").first.wait_for()
    page.locator("#crops img").first.wait_for()
    if page.locator("#explain").count():  # the top class's heat map (absent without Captum)
        page.wait_for_function("document.querySelector('#explain img')?.complete && "
                               "document.querySelector('#explain img').naturalWidth > 0")
    if similar:
        page.wait_for_function(f"document.querySelectorAll('#similar .caption-label').length >= {similar}")
        page.locator("#similar").scroll_into_view_if_needed()  # thumbnails load lazily
        # every thumbnail fetched and decoded by the browser
        page.wait_for_function("[...document.querySelectorAll('#similar img')].every(i => i.complete && i.naturalWidth > 0)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Screenshot the demo in headless chromium.")
    ap.add_argument("--model", required=True)
    ap.add_argument("--index")
    ap.add_argument("--photo", help="photo to upload (default: the example cat.jpg)")
    ap.add_argument("--out", default="demo.png")
    ap.add_argument("--width", type=int, default=1280)
    args = ap.parse_args(argv)
    if not Path(CHROMIUM).exists():
        print(f"{CHROMIUM} is missing: run 'bash scripts/install-browser.sh' (as root)", file=sys.stderr)
        return 2

    from alexnet_kit.paths import example_photos

    from .demo import SIMILAR, launch
    from .service import DemoService

    photo = args.photo or next(p for p in example_photos() if p.stem == "cat")

    service = DemoService.load(args.model, args.index)
    app = launch(service, port=free_port(), block=False, quiet=True)
    try:
        with browser_page(args.width) as page:
            upload_and_wait(page, app.local_url, photo, min(SIMILAR, service.index_size()))
            page.wait_for_timeout(500)  # let the images settle
            page.screenshot(path=args.out, full_page=True)
    finally:
        app.close()
        service.close()
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
