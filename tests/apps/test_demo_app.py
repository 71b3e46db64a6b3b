"""The Gradio app in-process, driven over HTTP by gradio_client: /classify and its safety rails."""
from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

pytest.importorskip("gradio")
from gradio_client import Client, handle_file  # noqa: E402

from alexnet_kit.apps.demo import SIMILAR, TOP, build_app, launch  # noqa: E402
from alexnet_kit.apps.screenshot import free_port  # noqa: E402
from alexnet_kit.apps.service import NO_INDEX, DemoService  # noqa: E402
from alexnet_kit.errors import AlexKitError, ImageError  # noqa: E402
from alexnet_kit.explain import DEFAULT_METHOD, METHODS, MethodNeedsCheckpoint  # noqa: E402
from alexnet_kit.explain.drawing import colour, overlay  # noqa: E402
from helpers import EXAMPLES, ROOT, demo_server, make_checkpoint  # noqa: E402

MAX_UPLOAD_MB = 1


@pytest.fixture(scope="module")
def service(tiny_checkpoint):
    return DemoService.load(tiny_checkpoint)


@pytest.fixture(scope="module")
def server(service):
    app = launch(service, port=free_port(), max_upload_mb=MAX_UPLOAD_MB, block=False, quiet=True)
    try:
        yield app
    finally:
        app.close()


@pytest.fixture(scope="module")
def client(server):
    return Client(server.local_url, verbose=False)


def test_binds_localhost_only(server):
    assert server.server_name == "127.0.0.1"
    assert server.local_url.startswith("http://127.0.0.1:")
    assert getattr(server, "share_url", None) is None


def test_named_endpoints(client):
    names = set(client.view_api(print_info=False, return_format="dict")["named_endpoints"])
    assert {"/classify", "/similar"} <= names
    assert len(names) == 2  # the crops picture is page-only


@pytest.mark.parametrize("photo", ["cat.jpg", "chelsea.png", "fish-bike.jpg"])
def test_classify_matches_the_classifier(client, service, photo):
    """The page's top-5 is exactly the ten-crop Classifier's answer for the same file."""
    out = client.predict(handle_file(str(EXAMPLES / photo)), api_name="/classify")
    got = [(c["label"], c["confidence"]) for c in out["confidences"]]
    want = service.classifier.classify_one(EXAMPLES / photo, top=TOP).labels
    assert len(got) == TOP
    assert [name for name, _ in got] == [l.name for l in want]
    np.testing.assert_allclose([p for _, p in got], [l.probability for l in want], rtol=1e-5, atol=1e-7)
    assert out["label"] == want[0].name
    assert all(0 < p <= 1 for _, p in got) and sum(p for _, p in got) <= 1 + 1e-6


def test_different_photos_get_different_answers(client):
    """Guards against an endpoint that ignores its input."""
    a = client.predict(handle_file(str(EXAMPLES / "cat.jpg")), api_name="/classify")
    b = client.predict(handle_file(str(EXAMPLES / "rocket.jpg")), api_name="/classify")
    assert [c["confidence"] for c in a["confidences"]] != [c["confidence"] for c in b["confidences"]]


def test_not_an_image_gets_the_image_error_text(client, tmp_path):
    bad = tmp_path / "holiday.jpg"
    bad.write_text("these are my holiday notes, not a photo")
    with pytest.raises(Exception, match=r"holiday\.jpg: not an image, or an image format Pillow cannot read"):
        client.predict(handle_file(str(bad)), api_name="/classify")


def test_truncated_jpeg_gets_the_image_error_text(client, tmp_path):
    data = (EXAMPLES / "cat.jpg").read_bytes()
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(data[: len(data) // 3])
    with pytest.raises(Exception, match=r"cut\.jpg: truncated image"):
        client.predict(handle_file(str(cut)), api_name="/classify")


def test_similar_without_index_says_so(client):
    with pytest.raises(Exception, match="No similarity index loaded"):
        client.predict(handle_file(str(EXAMPLES / "cat.jpg")), api_name="/similar")


def test_upload_size_limit(server, tmp_path):
    big = tmp_path / "noise.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (800, 800, 3), dtype=np.uint8)).save(big)
    assert big.stat().st_size > MAX_UPLOAD_MB * 1024 * 1024
    with big.open("rb") as f:
        r = httpx.post(server.local_url + "gradio_api/upload", files={"files": f})
    assert r.status_code == 413, r.text
    with (EXAMPLES / "cat.jpg").open("rb") as f:  # a normal photo still goes through
        assert httpx.post(server.local_url + "gradio_api/upload", files={"files": f}).status_code == 200


@pytest.mark.parametrize("route", ["gradio_api/file=", "file="])
@pytest.mark.parametrize("target", ["/etc/passwd", "{root}/pyproject.toml", "{tmp}/../../etc/passwd", "{examples}/cat.jpg"])
def test_files_outside_the_index_folders_are_refused(server, route, target):
    """Path traversal: nothing outside the allowed folders comes back, whatever the spelling."""
    path = target.format(root=ROOT, tmp="/tmp/gradio", examples=EXAMPLES)
    for url in (server.local_url + route + path, server.local_url + route + path.replace("/", "%2F")):
        r = httpx.get(url)
        assert r.status_code in (403, 404), (url, r.status_code)
        assert "root:" not in r.text and "[project]" not in r.text


@pytest.mark.parametrize("target", ["/etc/passwd", str(EXAMPLES / "cat.jpg")])
def test_forged_upload_path_is_refused(server, target):
    """The events decode uploads themselves (preprocess=False): a payload naming a server file
    that was never uploaded must be refused before it reaches them."""
    base = server.local_url + "gradio_api/call/classify"
    r = httpx.post(base, json={"data": [{"path": target, "meta": {"_type": "gradio.FileData"}}]})
    assert r.status_code == 200, r.text
    events = httpx.get(f"{base}/{r.json()['event_id']}", timeout=60).text
    assert "event: error" in events and "event: complete" not in events
    assert "confidences" not in events and "root:" not in events


def test_page_says_the_model_is_untrained_and_no_index(server):
    config = httpx.get(server.local_url + "config").text
    assert "Untrained model" in config
    assert NO_INDEX.split(":")[0] in config


def test_service_reports_unreadable_upload_under_its_own_name(service, tmp_path):
    bad = tmp_path / "gradio-temp-name.bin"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    with pytest.raises(ImageError) as e:
        service.read_photo(bad, "my photo.png")
    assert str(e.value).startswith("my photo.png: ")


@pytest.mark.slow
def test_concurrent_requests_get_their_own_answers(client, service):
    """A small load test: 16 requests, 8 at a time, through the queue; no errors, no cross-talk."""
    from concurrent.futures import ThreadPoolExecutor

    photos = sorted(EXAMPLES.glob("*"))
    want = {p.name: [l.name for l in service.classifier.classify_one(p, top=TOP).labels] for p in photos}
    jobs = [photos[i % len(photos)] for i in range(16)]

    def call(photo):
        out = client.predict(handle_file(str(photo)), api_name="/classify")
        return photo.name, [x["label"] for x in out["confidences"]]

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(call, jobs))
    assert len(results) == 16
    for name, labels in results:
        assert labels == want[name], name


# -- with a similarity index ---------------------------------------------------

@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory):
    """The example photos, plus a sibling folder whose name shares the prefix (must stay private)."""
    import shutil

    base = tmp_path_factory.mktemp("demo-photos")
    folder = base / "photos"
    shutil.copytree(EXAMPLES, folder)
    (base / "photos-private").mkdir()
    (base / "photos-private" / "secret.jpg").write_bytes((EXAMPLES / "cat.jpg").read_bytes())
    (base / "notes.txt").write_text("private notes")
    return folder


@pytest.fixture(scope="module")
def index_path(tiny_checkpoint, photo_folder, tmp_path_factory):
    from alexnet_kit.search import SimilarityIndex

    out = tmp_path_factory.mktemp("demo-index") / "photos.index"
    SimilarityIndex.build([photo_folder], out, model=tiny_checkpoint).close()
    return out


@pytest.fixture(scope="module")
def indexed_server(tiny_checkpoint, index_path):
    with demo_server(tiny_checkpoint, index_path) as running:
        yield running


def brute_force_ranking(checkpoint, folder, query):
    """Cosine similarity of fc7 features computed here, without FAISS or the demo."""
    from alexnet_kit.features import FeatureExtractor

    fx = FeatureExtractor.load(checkpoint)
    q = fx.extract_one(query)
    photos = sorted(folder.iterdir())
    scores = {str(p.resolve()): float(fx.extract_one(p) @ q) for p in photos}
    return sorted(scores.items(), key=lambda kv: -kv[1])


@pytest.mark.parametrize("photo", ["rocket.jpg", "chelsea.png"])
def test_similar_returns_the_nearest_photos(indexed_server, tiny_checkpoint, photo_folder, photo):
    app, service = indexed_server
    client = Client(app.local_url, verbose=False)
    gallery, hits = client.predict(handle_file(str(EXAMPLES / photo)), api_name="/similar")
    want = brute_force_ranking(tiny_checkpoint, photo_folder, EXAMPLES / photo)
    n = min(SIMILAR, len(want))
    assert len(hits) == len(gallery) == n
    assert [h["file"] for h in hits] == [path for path, _ in want][:n]
    np.testing.assert_allclose([h["score"] for h in hits], [s for _, s in want][:n], atol=1e-4)
    # the same photo is in the index: it comes first, as itself
    assert Path(hits[0]["file"]).name == photo and hits[0]["score"] == pytest.approx(1.0, abs=1e-4)
    assert gallery[0]["caption"].endswith(photo)
    assert all(Path(g["image"]).is_file() for g in gallery)  # the client fetched every picture


def test_similar_bad_upload_gets_the_image_error_text(indexed_server, tmp_path):
    app, _ = indexed_server
    bad = tmp_path / "empty.png"
    bad.write_bytes(b"")
    with pytest.raises(Exception, match=r"empty\.png: "):
        Client(app.local_url, verbose=False).predict(handle_file(str(bad)), api_name="/similar")


def test_only_the_index_photo_folders_are_served(indexed_server, photo_folder):
    app, service = indexed_server
    assert service.photo_folders() == [photo_folder.resolve()]
    base = app.local_url + "gradio_api/file="
    assert httpx.get(base + str(photo_folder / "cat.jpg")).status_code == 200
    refused = [
        "/etc/passwd",
        str(photo_folder.parent / "photos-private" / "secret.jpg"),  # same prefix, other folder
        str(photo_folder.parent / "notes.txt"),
        str(photo_folder) + "/../notes.txt",
        str(photo_folder) + "/../../../../../../etc/passwd",
        str(photo_folder) + "/..%2F..%2F..%2F..%2F..%2F..%2Fetc%2Fpasswd",
    ]
    for path in refused:
        r = httpx.get(base + path)
        assert r.status_code in (403, 404), (path, r.status_code)
        assert "root:" not in r.text and "private notes" not in r.text


def test_index_of_another_model_is_refused(index_path, tmp_path, tiny_config):
    from alexnet_kit.search import IndexMismatch

    other = make_checkpoint(tmp_path / "other.safetensors", tiny_config, seed=1)
    with pytest.raises(IndexMismatch, match="not comparable"):
        DemoService.load(other, index_path)


def test_page_names_the_index(indexed_server):
    app, service = indexed_server
    config = httpx.get(app.local_url + "config").text
    assert "No similarity index loaded" not in config
    assert f"{len(service.index)} photos" in config


def test_with_an_index_auto_picks_the_index_precision(tiny_checkpoint, tmp_path):
    """The demo's classifier vectors query the index: auto keeps to the index's precision, whichever is faster."""
    import shutil

    from alexnet_kit.engines import cpu
    from alexnet_kit.features import FeatureExtractor
    from alexnet_kit.search import builder

    if not cpu.native_bf16():
        pytest.skip("choosing between fp32 and bf16 needs a CPU with native bf16 (amx_bf16 / avx512_bf16)")
    model = tmp_path / "model.safetensors"
    shutil.copy(tiny_checkpoint, model)
    for precision in ("fp32", "bf16"):
        index = tmp_path / f"{precision}.index"
        builder.build([EXAMPLES], index, model, extractor=FeatureExtractor.load(model, engine="torch", precision=precision))
        svc = DemoService.load(model, index, engine="auto", precision="auto")
        try:
            assert svc.selection.precision == precision, svc.selection.reason
            assert svc.similar(EXAMPLES / "cat.jpg")
        finally:
            svc.close()


# -- the explain panel, why similar, units -------------------------------------

#: a few seconds each even on the tiny model (169 occluded crops; 32 integration steps)
SLOW_METHODS = ("occlusion", "integrated-gradients")

def overlay_size(e) -> tuple[int, int]:
    """drawing.overlay's picture of a map: the crop and the blend side by side, 2x, over a caption bar."""
    from alexnet_kit.explain.drawing import SCALE

    side = e.crop.shape[0] * SCALE
    return 2 * side + 8, side + 30


@pytest.mark.parametrize("method", [pytest.param(m, marks=pytest.mark.slow) if m in SLOW_METHODS else m for m in METHODS])
def test_explain_maps_the_top_class_with_each_method(service, method):
    """Every method on a checkpoint: a map of the central crop's top class that is not a constant, drawn as the page shows it."""
    e = service.explanation(EXAMPLES / "cat.jpg", method, "cat.jpg")
    assert (e.method, e.kind, e.photo) == (method, "class", "cat.jpg")
    assert e.heat.shape == e.crop.shape[:2] == (224, 224)
    assert np.ptp(e.heat) > 0 and np.ptp(colour(e.heat).reshape(-1, 3), 0).max() > 0  # a map, not one colour
    probs = service.classifier.engine.logits(service.meta.preprocess.crops(service.read_photo(EXAMPLES / "cat.jpg")[None], 1))
    assert e.class_index == int(probs.argmax())  # the top class on the central crop
    if method == DEFAULT_METHOD:  # the picture is drawing.overlay of that map, caption included
        img = service.explain(EXAMPLES / "cat.jpg", method, "cat.jpg")
        assert img.size == overlay_size(e)
        np.testing.assert_array_equal(np.asarray(img), np.asarray(overlay(e.crop, e.heat, e.caption())))


def test_explain_reuses_the_classifier_engine(service):
    assert service.explain_methods() == list(METHODS) and service.methods_note() is None
    assert service.default_method() == DEFAULT_METHOD
    service.explanation(EXAMPLES / "cat.jpg", "deconvnet")
    assert service._explainer.engine is service.classifier.engine


def test_explain_unreadable_upload_is_named_as_the_user_named_it(service, tmp_path):
    bad = tmp_path / "gradio-temp-name.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(ImageError, match=r"^my photo\.png: "):
        service.explain(bad, DEFAULT_METHOD, "my photo.png")


def test_without_captum_the_panel_says_so(service, monkeypatch):
    import alexnet_kit.explain as explain

    def no_captum():
        raise AlexKitError("explanations need Captum: pip install captum")

    monkeypatch.setattr(explain, "require_captum", no_captum)
    assert service.explain_problem() == "explanations need Captum: pip install captum"
    with pytest.raises(AlexKitError, match="need Captum"):
        service.explain(EXAMPLES / "cat.jpg")
    page = page_components(build_app(service, examples=[]))
    assert "need Captum" in page["explain-note"]["value"] and "explain-method" not in page


def page_components(app) -> dict[str, dict]:
    """The page's components by elem_id, with their props, as the browser receives them."""
    return {c["props"]["elem_id"]: c["props"] for c in app.config["components"] if c["props"].get("elem_id")}


def test_units_need_an_index(service):
    assert "Units need a similarity index" in service.units_problem()
    with pytest.raises(AlexKitError, match="No similarity index loaded"):
        service.unit_grid("conv5")
    with pytest.raises(AlexKitError, match="No similarity index loaded"):
        service.why_similar(EXAMPLES / "cat.jpg", EXAMPLES / "rocket.jpg")
    page = page_components(build_app(service, examples=[]))
    assert "Units need a similarity index" in page["units-note"]["value"] and "units-button" not in page


def test_why_similar_maps_the_fc7_cosine_to_a_neighbour(indexed_server, photo_folder):
    _, service = indexed_server
    e_img = service.why_similar(EXAMPLES / "chelsea.png", photo_folder / "cat.jpg", "gradcam", "chelsea.png")
    assert e_img.size == (2 * 448 + 8, 448 + 30)
    right = np.asarray(e_img)[:448, 456:].astype(float)
    assert right.std() > 0


@pytest.mark.parametrize("outside", ["/etc/passwd", "{private}/secret.jpg", "{photos}/../notes.txt", "{examples}/cat.jpg",
                                     "{photos}/missing.jpg"])
def test_why_similar_refuses_a_photo_outside_the_index(indexed_server, photo_folder, outside):
    _, service = indexed_server
    path = outside.format(private=photo_folder.parent / "photos-private", photos=photo_folder, examples=EXAMPLES)
    with pytest.raises(AlexKitError, match=r"not a photo in the index's folders") as e:
        service.why_similar(EXAMPLES / "cat.jpg", path, "gradcam")
    assert "\n" not in str(e.value)


def test_unit_grid_runs_the_pass_once_and_stores_it_in_the_index(indexed_server, index_path):
    from PIL import Image

    _, service = indexed_server
    assert service.units_problem() is None
    grid = service.unit_grid("conv5")
    assert isinstance(grid, Image.Image) and grid.width > 100 and grid.height > 100
    assert np.asarray(grid).std() > 0
    tables = list((index_path / "units").glob("*-conv5"))
    assert len(tables) == 1 and (tables[0] / "table.json").is_file() and list(tables[0].glob("chunk-*.npz"))
    with np.load(next(tables[0].glob("chunk-*.npz"))) as z:
        assert len(z["ids"]) == len(service.index)  # every photo of the index, through its own thread
    assert service.unit_grid("conv5") is grid  # kept: the pass does not run again
    with pytest.raises(AlexKitError, match="unknown layer 'fc7'"):
        service.unit_grid("fc7")


# -- on an exported artifact -----------------------------------------------------

@pytest.fixture(scope="module")
def onnx_model(tiny_checkpoint, tmp_path_factory):
    """The tiny checkpoint exported to ONNX, the checkpoint beside it (as `alexnet-kit export` leaves them)."""
    import shutil

    pytest.importorskip("onnxruntime")
    from alexnet_kit.export import export_checkpoint

    folder = tmp_path_factory.mktemp("artifact")
    checkpoint = shutil.copy(tiny_checkpoint, folder / "tiny.safetensors")
    return export_checkpoint(checkpoint, "onnx").path


@pytest.mark.slow
def test_on_an_artifact_only_occlusion_is_offered(onnx_model, index_path):
    svc = DemoService.load(onnx_model, index_path)
    try:
        assert svc.explain_methods() == ["occlusion"] and svc.default_method() == "occlusion"
        note = svc.methods_note()
        assert "\n" not in note and "gradcam" in note and "integrated-gradients" in note and "tiny.onnx" in note
        e = svc.explanation(EXAMPLES / "cat.jpg", "occlusion")
        assert np.ptp(e.heat) > 0 and svc._explainer.engine is svc.classifier.engine  # the onnxruntime engine itself
        with pytest.raises(MethodNeedsCheckpoint):
            svc.explain(EXAMPLES / "cat.jpg", "gradcam")
        page = page_components(build_app(svc, examples=[]))
        assert [tuple(c) for c in page["explain-method"]["choices"]] == [("occlusion", "occlusion")]
        assert page["explain-method"]["value"] == "occlusion" and note in page["explain-note"]["value"]
        # units: the checkpoint beside the artifact, with the same weights
        assert svc.units_problem() is None
        assert svc.unit_grid("conv1").width > 0
    finally:
        svc.close()


@pytest.mark.slow
def test_units_of_an_artifact_without_its_checkpoint_say_so(onnx_model, index_path, tmp_path, tiny_config):
    import shutil

    alone = shutil.copy(onnx_model, tmp_path / "tiny.onnx")
    svc = DemoService.load(alone, index_path)
    try:
        problem = svc.units_problem()
        assert problem.startswith("Units need the checkpoint") and "\n" not in problem
        assert "tiny.safetensors beside tiny.onnx" in problem
        with pytest.raises(AlexKitError, match="Units need the checkpoint"):
            svc.unit_grid("conv5")
        make_checkpoint(tmp_path / "tiny.safetensors", tiny_config, seed=7)  # a checkpoint of other weights beside it
        assert "holds other weights" in svc.units_problem()
    finally:
        svc.close()
