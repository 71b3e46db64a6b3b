"""The Gradio page: upload a photo, see its top-5 classes, the most similar photos, and why.

    alexnet-kit demo --model runs/x/model.safetensors --index runs/x/photos.index
    # or in Python:
    from alexnet_kit.apps.demo import build_app, launch
    from alexnet_kit.apps.service import DemoService
    launch(DemoService.load("model.safetensors", "photos.index"))

Two named API endpoints for gradio_client: ``/classify`` (photo -> top-5
label) and ``/similar`` (photo -> gallery and a JSON list of path/score).
The page also shows the ten crops the network averages over (§4.1), the
96 first-layer kernels (Figure 3), a heat map of the pixels behind the top
class, one of why a clicked neighbour is similar, and a layer's units
(:mod:`alexnet_kit.explain`); their logic is in :class:`DemoService`.

Safety: binds 127.0.0.1 unless told otherwise; uploads are capped
(``max_file_size``); the only files served besides Gradio's own cache are
those inside the index's photo folders (``allowed_paths``); every model call
goes through Gradio's queue, one at a time, since one call already keeps
the cores busy; an unreadable upload is reported in the page in one line.
"""
from __future__ import annotations

import base64
import binascii
import os
from pathlib import Path

import gradio as gr

from alexnet_kit.errors import AlexKitError, ImageError
from alexnet_kit.paths import example_photos

from .service import NO_INDEX, UNIT_LAYERS, UNIT_TOP, DemoService

TOP = 5
SIMILAR = 8
DEFAULT_MAX_UPLOAD_MB = 20
# All model work shares one queue slot: a ten-crop forward pass already keeps
# every core busy, so running two at once only makes both slower.
MODEL_QUEUE = "model"

CSS = """
#status .untrained { color: #b91c1c; font-weight: 600; }
"""


def default_examples() -> list[Path]:
    """The example photos: the checkout's examples/photos, else those shipped in the package."""
    return example_photos()


def status_markdown(service: DemoService) -> str:
    meta = service.meta
    name = service.model_path.name if service.model_path else "model"
    lines = [f"**Model** `{name}`: AlexNet, {len(meta.classes)} classes, "
             f"{meta.config.towers} tower(s), ten-crop test (§4.1) on {service.classifier.engine.description}."]
    if not service.trained:
        lines.append('<span class="untrained">Untrained model: these weights are freshly initialised (§5), '
                     "so the classes, probabilities and similar photos below are meaningless "
                     "until the model is trained.</span>")
    if service.has_index:
        folders = ", ".join(f"`{p}`" for p in service.photo_folders())
        lines.append(f"**Index** `{service.index_path.name}`: {service.index_size()} photos from {folders}.")
    return "\n\n".join(lines)


def caption(hit) -> str:
    """A gallery caption: similarity score (1 = same direction in fc7 space) and file name."""
    return f"{hit.score:.3f} · {hit.name}"


def kernels_caption(service: DemoService) -> str:
    cfg = service.meta.config
    if service.kernels() is None:
        return "First-layer kernels: not available for this model file (needs a checkpoint)"
    towers = ", tower 1 above tower 2" if cfg.towers == 2 else ""
    return (f"The {cfg.conv_channels[0]} first-layer kernels (Figure 3){towers}"
            + ("" if service.trained else ": random until trained"))


def upload_source(payload) -> tuple[str | bytes, str]:
    """Gradio's raw image payload -> (path or bytes, the name the user gave it).

    The events run with ``preprocess=False`` so that the demo, not Gradio's
    own Pillow call, decodes the upload: a corrupt file or a non-image then
    gets alexnet_kit's one-line reason. Gradio has already checked that the
    path lies in its upload folder before the payload reaches us.
    """
    if isinstance(payload, dict):
        name = payload.get("orig_name") or (Path(payload["path"]).name if payload.get("path") else "upload")
        if payload.get("path"):
            return payload["path"], name
        url = payload.get("url") or ""
        if url.startswith("data:") and "," in url:
            try:
                return base64.b64decode(url.split(",", 1)[1], validate=True), name
            except (binascii.Error, ValueError):
                raise ImageError(name, "pasted data is not valid base64") from None
    if isinstance(payload, (str, os.PathLike)):
        return os.fspath(payload), Path(payload).name
    raise ImageError("upload", "no image received")


def fail(e: AlexKitError) -> gr.Error:
    """gr.Error shows the message in the page (a toast) and to API clients."""
    return gr.Error(str(e), title="Cannot use this photo" if isinstance(e, ImageError) else "Error")


def handlers(service: DemoService):
    """The page's three functions (classify, similar, crops) over ``service``; problems become gr.Error."""

    def classify(payload):
        if payload is None:
            return None
        try:
            src, name = upload_source(payload)
            labels = service.classify(service.read_photo(src, name), TOP)
        except AlexKitError as e:
            raise fail(e) from None
        return {l.name: l.probability for l in labels}

    def similar(payload):
        if payload is None:
            return [], []
        try:
            src, name = upload_source(payload)
            hits = service.similar(src, SIMILAR, name)
        except AlexKitError as e:
            raise fail(e) from None
        return [(h.path, caption(h)) for h in hits], [h.to_dict() for h in hits]

    def crops(payload):
        if payload is None:
            return None
        try:
            src, name = upload_source(payload)
            return service.crops(service.read_photo(src, name))
        except AlexKitError:
            return None  # classify already reports the problem once

    return classify, similar, crops


def explain_handlers(service: DemoService):
    """The explain panel's functions: the top class's map, a clicked neighbour's map, and it again for a new method."""

    def explain(payload, method):
        if payload is None:
            return None
        try:
            src, name = upload_source(payload)
            return service.explain(src, method, name)
        except ImageError:
            return None  # classify already reports the problem once
        except AlexKitError as e:
            raise fail(e) from None

    def why(payload, neighbour, method):
        if payload is None or not neighbour:
            return None
        try:
            src, name = upload_source(payload)
            return service.why_similar(src, neighbour, method, name)
        except AlexKitError as e:
            raise fail(e) from None

    def pick(payload, hits, method, evt: gr.SelectData):
        """A thumbnail clicked: the map of why, and the neighbour kept for a change of method."""
        try:
            neighbour = hits[evt.index]["file"]
        except (IndexError, KeyError, TypeError):
            raise gr.Error("that photo is no longer among the similar ones: upload the photo again") from None
        return why(payload, neighbour, method), neighbour

    return explain, why, pick


def explain_panel(service: DemoService, image, gallery, hits) -> None:
    """Heat maps of the top class, and of why a clicked neighbour is similar, with a method picker."""
    gr.Markdown("## Why: the pixels behind the answer\n"
                "The central 224x224 crop and, beside it, the pixels that drive the top class: occlusion and "
                "the deconvnet (Zeiler & Fergus 2013), Grad-CAM and guided Grad-CAM (Selvaraju et al. 2017), "
                "integrated gradients (Sundararajan et al. 2017). Click a similar photo to see which regions of "
                "yours make it similar (its fc7 cosine).", elem_id="explain-heading")
    problem = service.explain_problem()
    note = problem or service.methods_note()
    gr.Markdown(f"**{note}**" if note else "", elem_id="explain-note", visible=bool(note))
    if problem:
        return
    explain, why, pick = explain_handlers(service)
    method = gr.Radio(service.explain_methods(), value=service.default_method(), label="Method", elem_id="explain-method")
    with gr.Row():
        shown = gr.Image(label="The top class (central crop)", interactive=False, format="png", elem_id="explain")
        why_shown = gr.Image(label="Why similar: click a photo in the gallery", interactive=False, format="png",
                             elem_id="why-similar", visible=service.has_index)
    picked = gr.State(None)
    model = dict(api_visibility="private", preprocess=False, concurrency_id=MODEL_QUEUE, concurrency_limit=1)
    gr.on([image.change, method.change], explain, inputs=[image, method], outputs=shown, **model)
    if service.has_index:
        image.change(lambda: (None, None), outputs=[why_shown, picked], api_visibility="private", concurrency_limit=None)
        gallery.select(pick, inputs=[image, hits, method], outputs=[why_shown, picked], **model)
        method.change(why, inputs=[image, picked, method], outputs=why_shown, **model)


def units_panel(service: DemoService) -> None:
    """A layer's units: each one's top photos of the index, cut to its receptive field."""
    gr.Markdown("## Units: what each map of a layer responds to\n"
                f"Per unit (one map of the layer), the {UNIT_TOP} photos of the index that excite it most, cut to "
                "its receptive field where it fired (Zeiler & Fergus 2013, Figure 2). The first time a layer is "
                "asked, one pass over the index's photos computes every unit's maximum and stores it in the index "
                "folder (`units/`).", elem_id="units-heading")
    problem = service.units_problem()
    gr.Markdown(f"**{problem}**" if problem else "", elem_id="units-note", visible=bool(problem))
    if problem:
        return

    def units(layer):
        try:
            return service.unit_grid(layer)
        except AlexKitError as e:
            raise fail(e) from None

    with gr.Row():
        layer = gr.Dropdown(list(UNIT_LAYERS), value="conv5", label="Layer", elem_id="units-layer", scale=1)
        button = gr.Button("Show the layer's units", elem_id="units-button", scale=1)
    grid = gr.Image(label="Each unit's top photos, numbered", interactive=False, format="png", elem_id="units")
    button.click(units, inputs=layer, outputs=grid, api_visibility="private", concurrency_id=MODEL_QUEUE,
                 concurrency_limit=1)


def build_app(service: DemoService, examples: list[Path] | None = None) -> gr.Blocks:
    examples = default_examples() if examples is None else examples
    classify, similar, crops = handlers(service)
    kernels = service.kernels()
    with gr.Blocks(title="AlexNet demo", analytics_enabled=False, delete_cache=(3600, 3600)) as app:
        gr.Markdown("# AlexNet: classify a photo, find similar ones, see why\n"
                    "Krizhevsky, Sutskever & Hinton (2012), *ImageNet Classification with Deep Convolutional Neural Networks*.")
        gr.Markdown(status_markdown(service), elem_id="status")
        with gr.Row():
            with gr.Column(scale=1):
                image = gr.Image(label="Photo: upload, paste or pick an example", type="filepath",
                                 sources=["upload", "clipboard"], elem_id="photo", height=320)
                if examples:
                    gr.Examples([[str(p)] for p in examples], inputs=[image], label="Example photos", examples_per_page=12)
            with gr.Column(scale=1):
                label = gr.Label(num_top_classes=TOP, label=f"Top-{TOP} classes (ten-crop average)" + ("" if service.trained else " (untrained model)"), elem_id="top5")
        gr.Markdown("## Most similar photos in the index" + ("" if service.has_index else f"\n**{NO_INDEX}**"), elem_id="similar-heading")
        gallery = gr.Gallery(label=f"The {SIMILAR} nearest photos by fc7 features (§6.1): score and file", columns=SIMILAR,
                             rows=1, height=170, elem_id="similar", object_fit="cover", visible=service.has_index)
        with gr.Accordion("Similar photos as data", open=False, visible=service.has_index):
            hits = gr.JSON(label="path and score of each similar photo", elem_id="similar-json")
        image.change(classify, inputs=image, outputs=label, api_name="classify", preprocess=False,
                     concurrency_id=MODEL_QUEUE, concurrency_limit=1)
        # Without an index the page never asks for similar photos (the heading
        # says why); /similar stays an endpoint and answers API clients with
        # the same clear error, from a trigger the page never fires.
        similar_trigger = image.change if service.has_index else gr.Button(visible=False).click
        similar_trigger(similar, inputs=image, outputs=[gallery, hits], api_name="similar", preprocess=False,
                        concurrency_id=MODEL_QUEUE, concurrency_limit=1)
        # the maps are asked after the labels and the gallery, which come first in the model's queue
        explain_panel(service, image, gallery, hits)
        gr.Markdown("## What the network sees and learned")
        with gr.Row():
            strip = gr.Image(label="The ten 224x224 crops it averages over (§4.1): corners and centre, then mirrored",
                             interactive=False, elem_id="crops", height=260)
            gr.Image(value=kernels, label=kernels_caption(service), interactive=False, elem_id="kernels", height=260)
        units_panel(service)

        image.change(crops, inputs=image, outputs=strip, api_visibility="private", preprocess=False,
                     concurrency_limit=None)
    return app


def launch(service: DemoService, host: str = "127.0.0.1", port: int | None = 7860, max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB,
           examples: list[Path] | None = None, block: bool = True, quiet: bool = False, queue_size: int = 256) -> gr.Blocks:
    """Build, queue and start the app; with ``block=False`` returns at once (tests)."""
    app = build_app(service, examples)
    # api_open=False: REST calls must go through the queue too.
    app.queue(max_size=queue_size, api_open=False)
    try:
        app.launch(
            server_name=host,
            server_port=port,
            share=False,
            max_file_size=f"{max_upload_mb}mb",
            allowed_paths=[str(p) for p in service.photo_folders()],
            prevent_thread_lock=not block,
            quiet=quiet,
            show_error=False,
            ssr_mode=False,
            mcp_server=False,
            css=CSS,
            footer_links=["api"],
        )
    except BaseException:  # e.g. Ctrl-C during start-up: never leave a half-started server behind
        app.close()
        raise
    return app
