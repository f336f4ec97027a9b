"""The Gradio app: drop a photo, see its path of places on a map and in the Poincare disk.

build_demo() takes the session (predictors by profile) so that tests can pass fakes;
app.py builds the real one and launches. Handlers live in ui.handlers, figures in viz.
"""

from __future__ import annotations

import functools
import os

from hierloc.paths import ASSETS_DIR
from hierloc.ui import handlers as H

MAX_UPLOAD = "25mb"

CSS = """
.gradio-container {max-width: 1400px !important}
#hl-title h1 {margin-bottom: 0}
#hl-title p {margin-top: 2px; opacity: .8}
.hl-banner {background:#fef3c7; color:#78350f; border:1px solid #f59e0b; border-radius:8px; padding:8px 12px; margin-bottom:8px; font-weight:600}
.hl-error {background:#fee2e2; color:#7f1d1d; border:1px solid #ef4444; border-radius:8px; padding:10px 12px; font-weight:600}
.hl-placeholder {padding:16px; opacity:.7; font-style:italic}
.hl-result {padding:4px 2px}
.hl-path {display:flex; flex-wrap:wrap; gap:6px 14px; align-items:flex-end}
.hl-step {display:flex; flex-direction:column; min-width:120px}
.hl-level {font-size:.75rem; text-transform:uppercase; letter-spacing:.05em; font-weight:700}
.hl-name {font-size:1.45rem; font-weight:700; line-height:1.2}
.hl-bar {display:inline-block; width:90px; height:6px; background:rgba(128,128,128,.25); border-radius:3px; margin-top:4px; vertical-align:middle}
.hl-bar > span {display:block; height:6px; border-radius:3px}
.hl-pct {font-size:.75rem; margin-left:6px; opacity:.8}
.hl-coords {margin-top:8px; opacity:.85}
.hl-truth {margin-top:6px}
.hl-path-inline {font-size:1.2rem; font-weight:700}
#explore-click {display:none !important}
.hl-note {font-size:.85rem; opacity:.8}
"""

HEAD = """
<script>
window.addEventListener('message', function (ev) {
  var d = ev.data; if (!d || !d.hierloc_click) return;
  var el = document.querySelector('#explore-click textarea, #explore-click input');
  if (!el) return;
  el.value = d.hierloc_click[0].toFixed(5) + ',' + d.hierloc_click[1].toFixed(5);
  el.dispatchEvent(new Event('input', {bubbles: true}));
});
</script>
"""

ABOUT = """
**HierLoc** compares a photo with a hierarchy of about 165,000 places (countries, regions, sub-regions and
cities from GeoNames) embedded in hyperbolic space, and walks down the tree with a beam search: the best
countries, then their best regions, and so on. The method follows *HierLoc: Hyperbolic Entity Embeddings for
Hierarchical Visual Geolocation* (arXiv 2601.23064).

Models: **trained** (a HierLoc checkpoint; the one shipped here was trained in GeoCLIP's space and reads a photo
through CLIP ViT-L/14 and GeoCLIP's image head), **zero-shot** (CLIP ViT-L/14 and GeoCLIP's published encoders,
no HierLoc training: each place is judged by the probability of everything inside it, its cities and GeoCLIP's
100k gallery locations, and the places are drawn in the same hyperbolic space), **offline preview** (runs with no network; its
head is untrained, so its answers are not real predictions).

Data: GeoNames (CC BY 4.0), Natural Earth boundaries (public domain; sub-region outlines are approximations),
map tiles © OpenStreetMap contributors, example photos from OpenStreetView-5M by Mapillary contributors
(CC BY-SA 4.0).
"""

PRIVACY = ("Photos are used only to answer your request: they are not stored, and they are deleted from the "
           "server as soon as the answer is ready. Nothing about them is logged.")


def _photo_component(gr):
    class _PhotoInput(gr.Image):
        """An Image input that hands the handler the uploaded file untouched (EXIF and all),
        so that every bad file gets the app's own plain message, not a decoding crash."""

        is_template = True  # rendered by Gradio's own Image frontend

        def preprocess(self, payload):
            if payload is None:
                return None
            if payload.url and payload.url.startswith("data:"):  # webcam / clipboard
                return super().preprocess(payload)
            return str(payload.path) if payload.path else None

    return _PhotoInput


def default_session() -> H.Session:
    """The real session: profiles available here, the resolved default, the examples."""
    from hierloc.infer.predictor import (GEOCLIP_BACKBONE, Predictor, checkpoint_backbone, find_checkpoint,
                                         load_predictor, preview_engine, resolve_model, zeroshot_available)
    from hierloc.paths import CHECKPOINTS_DIR

    res = resolve_model(os.environ.get("HIERLOC_MODEL"))
    available = ["preview"]
    clip = zeroshot_available()
    if clip:
        available.insert(0, "zero-shot")
    ckpt = find_checkpoint(CHECKPOINTS_DIR)
    if res.profile == "trained" or (ckpt and (clip or checkpoint_backbone(ckpt) != GEOCLIP_BACKBONE)):
        available.insert(0, "trained")  # the GeoCLIP-space checkpoint reads photos through CLIP
    if res.profile not in available:
        available.insert(0, res.profile)

    def loader(profile):
        if profile == res.profile:
            return load_predictor(res.source if res.profile == "trained" else res.profile)
        if profile == "preview":
            return Predictor(preview_engine())
        return load_predictor(profile if profile != "trained" else None)

    return H.Session(default_profile=res.profile, available=available, loader=loader,
                     examples=H.load_examples(ASSETS_DIR / "examples"))


def build_demo(session: H.Session | None = None):
    import gradio as gr

    session = session or default_session()
    session.predictor()  # load the default model once, before the first request
    Photo = _photo_component(gr)
    examples = list(session.examples.values())
    with gr.Blocks(title="HierLoc: where was this photo taken?", delete_cache=(600, 900)) as demo:
        with gr.Row(equal_height=True):
            gr.Markdown("# HierLoc: where was this photo taken?\nA path of places, from country to city, "
                        "read off a hierarchy embedded in hyperbolic space.", elem_id="hl-title")
            profile = gr.Dropdown([(H.PROFILE_LABELS[p], p) for p in session.available], value=session.default_profile,
                                  label="Model", scale=0, min_width=300, elem_id="hl-model")
        with gr.Accordion("About HierLoc", open=False):
            gr.Markdown(ABOUT + "\n" + H.geometry_about(session.predictor()))
        with gr.Tab("Locate a photo"):
            with gr.Row():
                with gr.Column(scale=4, min_width=300):
                    photo = Photo(label="Photo (drop, click, paste or use the webcam)", type="filepath",
                                  sources=["upload", "clipboard", "webcam"], height=300, elem_id="hl-photo")
                    go = gr.Button("Locate", variant="primary", elem_id="hl-go")
                    if examples:
                        gr.Examples([[str(e.file)] for e in examples], inputs=[photo],
                                    example_labels=[e.label for e in examples],
                                    label="Examples (OpenStreetView-5M, Mapillary contributors, CC BY-SA 4.0)")
                    beam = gr.Slider(1, 20, value=10, step=1, label="Beam width")
                    top_k = gr.Slider(1, 10, value=5, step=1, label="Candidates")
                    use_exif = gr.Checkbox(value=True, label="Use the photo's GPS tag, if any, as the true location")
                    gr.Markdown(PRIVACY, elem_classes=["hl-note"])
                with gr.Column(scale=8, min_width=360):
                    result = gr.HTML(H.result_html_message("Drop a photo, or pick an example, to see where it was taken."),
                                     elem_id="hl-result")
                    with gr.Tabs():
                        with gr.Tab("Map"):
                            map_html = gr.HTML(H.empty_map_html(), elem_id="hl-map")
                        with gr.Tab("Poincare disk"):
                            disk = gr.Plot(label="Poincare disk", elem_id="hl-disk")
                            from hierloc.viz.disk import CAPTION

                            gr.Markdown(CAPTION, elem_classes=["hl-note"])
                        with gr.Tab("Candidates"):
                            table = gr.Dataframe(H.candidates_frame_empty(), label="Top paths", interactive=False,
                                                 elem_id="hl-candidates")
                    with gr.Accordion("Answer as JSON", open=False):
                        answer = gr.JSON(label="Prediction", elem_id="hl-json")
        with gr.Tab("Many photos"):
            gr.Markdown("Drop several photos, or a zip of photos, to locate them all: one map with every guess (and "
                        "the true location where a photo's GPS tag or an example's label gives it), a table, and the "
                        "results as CSV and GeoJSON (the same files as `python -m hierloc predict`). " + PRIVACY)
            with gr.Row():
                with gr.Column(scale=4, min_width=300):
                    many = gr.File(label="Photos or a zip", file_count="multiple", file_types=["image", ".zip"],
                                   elem_id="hl-many")
                    many_go = gr.Button("Locate all", variant="primary", elem_id="hl-many-go")
                    many_files = gr.File(label="Results (CSV, GeoJSON)", file_count="multiple", interactive=False,
                                         elem_id="hl-many-files")
                with gr.Column(scale=8, min_width=360):
                    many_summary = gr.HTML(H.result_html_message("Drop several photos, or a zip of photos."),
                                           elem_id="hl-many-summary")
                    many_map = gr.HTML(H.empty_map_html("The map of all the guesses appears here."), elem_id="hl-many-map")
                    many_table = gr.Dataframe(headers=H.BATCH_COLUMNS, label="One row per file", interactive=False,
                                              elem_id="hl-many-table")
        with gr.Tab("Explore the hierarchy"):
            gr.Markdown("No photo needed: find a place by name, or click the map, to see it, its ancestors and its "
                        "children in the Poincare disk, with the hyperbolic distances between them.")
            with gr.Row():
                with gr.Column(scale=4, min_width=300):
                    query = gr.Textbox(label="Search a place", placeholder="e.g. Paris, Kyoto, Utah", elem_id="hl-search")
                    choice = gr.Dropdown([], label="Matches", interactive=True, elem_id="hl-matches")
                    place_info = gr.HTML(H.result_html_message("Search for a place, or click the map."))
                    distances = gr.Dataframe(label="Hyperbolic distances", interactive=False)
                    clicked = gr.Textbox(elem_id="explore-click", show_label=False, container=False)
                with gr.Column(scale=8, min_width=360):
                    explore_map = gr.HTML(H.empty_map_html("Pick a place to see it here."))
                    explore_disk = gr.Plot(label="Poincare disk")

        locate = functools.partial(H.locate, session)
        outputs = [result, map_html, disk, table, answer]
        go.click(locate, [photo, beam, top_k, use_exif, profile], outputs, api_name="locate")
        # any new photo (upload, paste, webcam, example) is located at once; clearing resets
        photo.change(locate, [photo, beam, top_k, use_exif, profile], outputs, api_visibility="private",
                     trigger_mode="always_last")
        api_btn = gr.Button(visible=False)
        api_out = gr.JSON(visible=False)
        api_btn.click(functools.partial(H.predict_api, session), [photo, beam, top_k, use_exif, profile], api_out,
                      api_name="predict")

        def locate_many(files, beam_width, model, progress=gr.Progress()):
            return H.locate_many(session, files, beam_width, model, progress)

        many_go.click(locate_many, [many, beam, profile], [many_summary, many_map, many_table, many_files],
                      api_name="locate_many")

        def search(q):
            matches = H.search_places(session, q)
            return gr.Dropdown(choices=matches, value=matches[0][1] if matches else None)

        query.submit(search, query, choice, api_name="search_places")
        query.change(search, query, choice, api_visibility="private", trigger_mode="always_last")
        explore_outputs = [place_info, explore_disk, explore_map, distances]
        choice.change(functools.partial(H.explore, session), choice, explore_outputs, api_name="explore")
        clicked.change(functools.partial(H.explore_click, session), clicked, explore_outputs, api_name="explore_click")
    return demo


def launch_options() -> dict:
    """Host, port (GRADIO_SERVER_NAME / GRADIO_SERVER_PORT or PORT), upload limit, look."""
    import gradio as gr

    port = int(os.environ.get("GRADIO_SERVER_PORT", os.environ.get("PORT", "7860")))
    return {"server_name": os.environ.get("GRADIO_SERVER_NAME", "0.0.0.0"), "server_port": port,
            "max_file_size": MAX_UPLOAD, "show_error": False, "css": CSS, "head": HEAD,
            "theme": gr.themes.Soft(primary_hue="blue")}
