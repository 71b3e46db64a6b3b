"""The demo in a real browser: Debian's chromium driven by Playwright.

Uploads a real photo, reads the top-5 labels and the similar-photo gallery
back from the page, checks them against the service, and saves a
screenshot; then the explain panel, why-similar and units pictures. Without /usr/bin/chromium this FAILS where the browser could
have been installed (root, or CI: `bash scripts/install-browser.sh` is part
of the test command) and skips, with the command to run, elsewhere.
"""
from __future__ import annotations

import io
import os
import shutil
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from alexnet_kit.apps.demo import caption
from alexnet_kit.apps.screenshot import CHROMIUM, browser_page, upload_and_wait
from helpers import EXAMPLES, demo_server

pytestmark = pytest.mark.slow


def require_chromium() -> None:
    if Path(CHROMIUM).exists():
        return
    how = "install it with: sudo bash scripts/install-browser.sh (Debian's chromium via apt-get)"
    if os.geteuid() == 0 or os.environ.get("CI"):
        pytest.fail(f"{CHROMIUM} is missing; the test command installs it first: {how}")
    pytest.skip(f"{CHROMIUM} is missing and this is not root: {how}")


@pytest.fixture(scope="module")
def demo(tiny_checkpoint, tmp_path_factory):
    require_chromium()
    from alexnet_kit.search import SimilarityIndex

    base = tmp_path_factory.mktemp("browser")
    photos = base / "photos"
    shutil.copytree(EXAMPLES, photos)
    SimilarityIndex.build([photos], base / "photos.index", model=tiny_checkpoint).close()
    with demo_server(tiny_checkpoint, base / "photos.index") as running:
        yield running


@pytest.fixture(scope="module")
def page():
    require_chromium()
    with browser_page(1280, 1000) as p:
        yield p


def test_upload_shows_labels_gallery_and_crops(demo, page, tmp_path):
    app, service = demo
    photo = EXAMPLES / "chelsea.png"
    expected_hits = service.similar(photo, 8)
    upload_and_wait(page, app.local_url, photo, len(expected_hits))

    # top-5 labels, as the page shows them
    names = page.locator("#top5 dt").all_inner_texts()
    shown = page.locator("#top5 dd").all_inner_texts()
    want = service.classify(service.read_photo(photo), 5)
    assert names == [l.name for l in want]
    assert shown == [f"{round(100 * l.probability)}%" for l in want]
    assert page.locator("#top5 [data-testid=label-output-value]").inner_text() == want[0].name

    # the gallery: captions in order, every thumbnail actually loaded from the server
    captions = page.locator("#similar .caption-label").all_inner_texts()
    assert captions == [caption(h) for h in expected_hits]
    assert captions[0].endswith("chelsea.png")  # the photo itself is in the index
    widths = page.eval_on_selector_all("#similar img", "els => els.map(e => e.naturalWidth)")
    assert len(widths) == len(expected_hits) and all(w > 0 for w in widths)

    # the ten crops and the kernels are pictures the browser decoded
    for sel in ("#crops img", "#kernels img"):
        assert page.eval_on_selector(sel, "e => e.naturalWidth") > 0, sel
    assert "Untrained model" in page.locator("#status").inner_text()

    shot = tmp_path / "demo.png"
    page.screenshot(path=str(shot), full_page=True)
    with Image.open(shot) as im:
        assert im.width == 1280 and im.height > 1000


def test_bad_upload_shows_a_clear_message(demo, page, tmp_path):
    app, _ = demo
    bad = tmp_path / "holiday-notes.jpg"
    bad.write_text("not a photo at all")
    page.goto(app.local_url)
    page.locator("#photo input[type=file]").set_input_files(str(bad))
    toast = page.get_by_text("holiday-notes.jpg: not an image, or an image format Pillow cannot read")
    toast.first.wait_for()
    assert toast.first.is_visible()
    assert page.locator("#top5 dt").count() == 0


def test_picking_an_example_classifies_it(demo, page):
    app, service = demo
    page.goto(app.local_url)
    page.locator("img[src*='rocket.jpg']").first.click()  # the example thumbnail
    page.locator("#top5 dt").first.wait_for()
    want = service.classify(service.read_photo(EXAMPLES / "rocket.jpg"), 5)
    assert page.locator("#top5 dt").all_inner_texts() == [l.name for l in want]


DECODED = "sel => { const i = document.querySelector(sel); return !!i && i.complete && i.naturalWidth > 0 }"


def shown_image(page, sel: str) -> np.ndarray:
    """The picture the browser shows in ``sel``, fetched from the server as the browser did."""
    src = page.eval_on_selector(sel, "e => e.src")
    with Image.open(io.BytesIO(httpx.get(src).content)) as im:
        return np.asarray(im.convert("RGB"))


def test_explain_why_similar_and_units(demo, page):
    """The top class's map, a new one for another method, why the first neighbour is similar, and a layer's units:
    each a picture the browser decoded, and the very picture the service draws."""
    app, service = demo
    photo = EXAMPLES / "chelsea.png"
    hits = service.similar(photo, 8)
    upload_and_wait(page, app.local_url, photo, len(hits))  # waits for the explain map too
    assert page.locator("#explain-method input:checked").get_attribute("value") == service.default_method()
    before = page.eval_on_selector("#explain img", "e => e.src")
    np.testing.assert_array_equal(shown_image(page, "#explain img"),
                                  np.asarray(service.explain(photo, service.default_method(), photo.name)))

    page.locator("#explain-method").get_by_label("deconvnet").check()
    page.wait_for_function("s => { const i = document.querySelector('#explain img');"
                           " return !!i && i.src !== s && i.complete && i.naturalWidth > 0 }", arg=before)
    np.testing.assert_array_equal(shown_image(page, "#explain img"), np.asarray(service.explain(photo, "deconvnet", photo.name)))

    page.locator("#similar .thumbnail-item").first.click()
    page.wait_for_function(DECODED, arg="#why-similar img")
    want = service.why_similar(photo, hits[0].path, "deconvnet", photo.name)  # the method picked above
    np.testing.assert_array_equal(shown_image(page, "#why-similar img"), np.asarray(want))

    assert page.locator("#units-layer input").input_value() == "conv5"
    page.locator("#units-button").click()
    page.wait_for_function(DECODED, arg="#units img")
    assert list(Path(service.index.path).glob("units/*-conv5/table.json"))
    np.testing.assert_array_equal(shown_image(page, "#units img"), np.asarray(service.unit_grid("conv5")))
