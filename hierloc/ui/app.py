"""The Gradio app: drop a photo, see its path of places on a map and in the Poincare disk.

build_demo() takes the session (predictors by profile) so that tests can pass fakes;
app.py builds the real one and launches. Handlers live in ui.handlers, figures in viz.
"""

from __future__ import annotations

import functools
import logging
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
.hl-startup {background:#eff6ff; color:#1e3a8a; border:1px solid #93c5fd; border-radius:8px; padding:8px 12px;
  margin-bottom:8px}
.hl-startup-ready {background:#f0fdf4; color:#14532d; border-color:#86efac}
.hl-startup-failed {background:#fee2e2; color:#7f1d1d; border-color:#ef4444}
.hl-startup-bar {height:8px; background:rgba(30,58,138,.15); border-radius:4px; margin-top:6px; overflow:hidden}
.hl-startup-bar > span {display:block; height:8px; background:#2563eb}
.hl-flag {height:1em; width:auto; vertical-align:-0.1em; border-radius:2px; box-shadow:0 0 0 1px rgba(0,0,0,.15)}
#hl-distances table {table-layout:auto}
.hl-eval-table {border-collapse:collapse; margin-top:6px; font-size:.85rem}
.hl-eval-table td, .hl-eval-table th {border:1px solid rgba(128,128,128,.35); padding:2px 6px; text-align:right}
.hl-eval-table td:first-child {text-align:left}
"""

ATLAS_CSS = """
.hl-atlas {display:flex; flex-direction:column; gap:6px}
.hl-atlas-bar {display:flex; gap:8px; align-items:center; flex-wrap:wrap; font-size:.9rem; min-height:28px}
.hl-atlas-back {padding:2px 10px; border-radius:6px; border:1px solid var(--border-color-primary, #cbd5e1);
  background:var(--button-secondary-background-fill, #f1f5f9); color:var(--body-text-color, #111); cursor:pointer}
.hl-atlas-back:disabled {opacity:.4; cursor:default}
.hl-crumb {text-decoration:none; font-weight:600}
.hl-crumb-sep {opacity:.6}
.hl-atlas-depth {font-weight:700; min-height:1.2em}
.hl-atlas-stage {position:relative; width:100%; max-width:600px; margin:0 auto}
.hl-atlas-svg {width:100%; height:auto; display:block; overflow:visible}
.hl-atlas-rim {fill:rgba(148,163,184,.08); stroke:#94a3b8; stroke-width:.006}
.hl-atlas-edge {fill:none; stroke-width:.004; opacity:.4}
.hl-atlas-arc {fill:none; stroke-width:.008; opacity:.85}
.hl-atlas-arc.hl-cand {stroke-dasharray:.02 .015; opacity:.55; stroke-width:.005}
.hl-atlas-pt {stroke:#ffffff; stroke-width:.003; cursor:pointer}
.hl-atlas-pt:hover {stroke:#0f172a; stroke-width:.008}
.hl-role-sibling, .hl-role-grandchild {opacity:.55}
.hl-atlas-label {font-size:.036px; fill:var(--body-text-color, #111); paint-order:stroke;
  stroke:var(--background-fill-primary, #fff); stroke-width:.009px; pointer-events:none}
.hl-focus-label {font-weight:700; font-size:.048px}
.hl-atlas-photo {fill:#a21caf; stroke:#ffffff; stroke-width:.006; pointer-events:none}
.hl-atlas-photo-hit {fill:transparent; cursor:help}
.hl-atlas-tip {position:absolute; pointer-events:none; background:var(--background-fill-primary, #fff);
  color:var(--body-text-color, #111); border:1px solid var(--border-color-primary, #cbd5e1); padding:6px 8px;
  border-radius:6px; font-size:.8rem; max-width:280px; box-shadow:0 2px 8px rgba(0,0,0,.15); z-index:5}
.hl-tip-level {opacity:.7}
.hl-atlas-caption {font-size:.85rem; opacity:.85}
"""

ATLAS_CAPTION = (
    "**How to read the disk.** Every place of the hierarchy is a point of the hyperbolic plane, laid out as a "
    "tree: this picture is the embedding itself, nothing is projected. The Earth's point is the root; each place "
    "sits beyond its parent, with its children fanned out around it in their order on the map, north up. The "
    "rim is infinitely far away, so equal sizes and distances shrink toward it. **The star is the photo**: the "
    "weighted median of the cities its answer gives probability to. The middle of far-apart places lies near "
    "their common ancestor, so the star's depth is the answer's certainty: beside its city when that city holds "
    "more than half of the probability, by its region when only the region does, near the centre when not even "
    "a country does. Curves are geodesics (shortest paths). Hover a dot for its true hyperbolic distance from "
    "the centre and from the photo; click one to bring it to the centre.")

EXPLORE_INTRO = (
    "No photo needed. The disk is the **atlas**: every one of the hierarchy's places in the hyperbolic plane, laid "
    "out as a tree around the Earth's point. Click a place to bring it to the centre: its children fan out "
    "around it and the rest of the world shrinks toward the rim. Or find a place by name, or click the map.")

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


def atlas_disk(gr, session: H.Session, elem_id: str, value: dict | None = None):
    """The atlas disk widget: gr.HTML drawn by atlas_disk.js, re-centred on a click by the
    server function atlas_refocus (every view computed exactly here)."""
    from pathlib import Path

    def atlas_refocus(args, *_):
        state, key = (list(args) + [None, None])[:2] if isinstance(args, (list, tuple)) else (args, None)
        return H.atlas_refocus(session, state, key)

    js = (Path(__file__).parent / "atlas_disk.js").read_text()
    return gr.HTML(value=value or H.atlas_message(""), html_template='<div class="hl-atlas-host"></div>',
                   css_template=ATLAS_CSS, js_on_load=js, server_functions=[atlas_refocus], elem_id=elem_id,
                   apply_default_css=False)


def default_session() -> H.Session:
    """The real session: profiles available here, the resolved default, the examples."""
    from pathlib import Path

    from hierloc.infer.predictor import (GEOCLIP_BACKBONE, Predictor, checkpoint_backbone, find_checkpoint,
                                         load_predictor, preview_engine, resolve_model, zeroshot_available)
    from hierloc.paths import CHECKPOINTS_DIR

    res = resolve_model(os.environ.get("HIERLOC_MODEL"))
    logging.getLogger(__name__).info("default model: %s (%s)", res.profile, res.reason)
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
        if profile == "preview":
            return Predictor(preview_engine())
        if profile == res.profile:
            return load_predictor(res.source if res.profile == "trained" else res.profile)
        return load_predictor(profile if profile != "trained" else None)

    session = H.Session(default_profile=res.profile, available=available, loader=loader,
                        examples=H.load_examples(ASSETS_DIR / "examples"))
    source = Path(res.source) if res.profile == "trained" and res.source else ckpt
    if source is not None:
        session.labels["trained"] = f"trained HierLoc checkpoint {source.name}"
    from hierloc.hub import cached_file
    from hierloc.infer.zeroshot import CLIP_REPO

    # the profiles that read photos through CLIP ViT-L/14: zero-shot, and a GeoCLIP-space checkpoint
    through_clip = [p for p in available if p == "zero-shot" or (
        p == "trained" and source is not None and checkpoint_backbone(source) == GEOCLIP_BACKBONE)]
    if res.profile in through_clip and cached_file(CLIP_REPO, ["model.safetensors", "pytorch_model.bin"]) is None:
        # a first start: the page comes up at once, the weights arrive in the background
        session.startup = H.StartupDownload(session, res.profile, waiting=tuple(through_clip))
    return session


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
            profile = gr.Dropdown([(session.label(p), p) for p in session.available], value=session.default_profile,
                                  label="Model", scale=0, min_width=300, elem_id="hl-model")
        startup = gr.HTML(H.startup_html(session), elem_id="hl-startup")
        timer = gr.Timer(1.0, active=session.startup is not None)

        def tick():
            done = session.startup is None or session.startup.progress.stage in ("ready", "failed")
            return H.startup_html(session), gr.Timer(active=not done)

        timer.tick(tick, None, [startup, timer], api_visibility="private", show_progress="hidden")
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
                            from hierloc.viz.disk import CAPTION

                            disk_mode = gr.Radio(H.DISK_MODES, value="atlas", show_label=False, elem_id="hl-disk-mode")
                            disk = atlas_disk(gr, session, "hl-disk", H.atlas_message(
                                "The photo and its places appear here after a photo is located."))
                            disk_note = gr.Markdown(ATLAS_CAPTION, elem_classes=["hl-note"])
                            learned = gr.Plot(label="The checkpoint's geometry", elem_id="hl-disk-learned", visible=False)
                            learned_note = gr.Markdown(CAPTION, elem_classes=["hl-note"], visible=False)
                            learned_state = gr.State(None)
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
                    many = gr.File(label="Photos, a zip, a labels CSV",
                                   file_count="multiple", file_types=["image", ".zip", ".csv"],
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
            gr.Markdown(EXPLORE_INTRO)
            start_view = H.explore_view(session, None)
            start_info, start_map, start_dist, start_why, _ = H.explore_panels(session, start_view)
            with gr.Row():
                with gr.Column(scale=4, min_width=300):
                    query = gr.Textbox(label="Search a place", placeholder="e.g. Paris, Kyoto, Utah", elem_id="hl-search")
                    choice = gr.Dropdown([], label="Matches", interactive=True, elem_id="hl-matches")
                    place_info = gr.HTML(start_info, elem_id="hl-place-info")
                    why = gr.Markdown(start_why, elem_id="hl-why", elem_classes=["hl-note"])
                    clicked = gr.Textbox(elem_id="explore-click", show_label=False, container=False)
                with gr.Column(scale=8, min_width=360):
                    explore_mode = gr.Radio(H.DISK_MODES, value="atlas", show_label=False, elem_id="hl-explore-mode")
                    explore_disk = atlas_disk(gr, session, "hl-explore-disk", start_view)
                    explore_learned = gr.Plot(label="The checkpoint's geometry", visible=False, elem_id="hl-explore-learned")
                    explore_map = gr.HTML(start_map, elem_id="hl-explore-map")
                    distances = gr.Dataframe(start_dist, label="Hyperbolic distances in the atlas", interactive=False,
                                             wrap=True, elem_id="hl-distances", max_height=360)

        locate = functools.partial(H.locate, session)
        outputs = [result, map_html, disk, learned, table, answer, learned_state]
        inputs = [photo, beam, top_k, use_exif, profile, disk_mode]
        go.click(locate, inputs, outputs, api_name="locate")
        # any new photo (upload, paste, webcam, example) is located at once; clearing resets
        photo.change(locate, inputs, outputs, api_visibility="private", trigger_mode="always_last")

        def switch_disk(mode, data):
            on = mode == "learned"
            return (gr.update(visible=not on), gr.update(visible=not on),
                    gr.update(visible=on, value=H.learned_figure(data) if on else None), gr.update(visible=on))

        disk_mode.change(switch_disk, [disk_mode, learned_state], [disk, disk_note, learned, learned_note],
                         api_visibility="private")
        api_btn = gr.Button(visible=False)
        api_out = gr.JSON(visible=False)
        # requests that wait together are answered in one pass of the image encoder
        api_btn.click(functools.partial(H.predict_api_batch, session), [photo, beam, top_k, use_exif, profile],
                      api_out, api_name="predict", batch=True, max_batch_size=H.API_BATCH, concurrency_limit=1)

        def locate_many(files, beam_width, model, progress=gr.Progress()):
            return H.locate_many(session, files, beam_width, model, progress)

        many_go.click(locate_many, [many, beam, profile], [many_summary, many_map, many_table, many_files],
                      api_name="locate_many")

        def search(q):
            matches = H.search_places(session, q)
            return gr.Dropdown(choices=matches, value=matches[0][1] if matches else None)

        query.submit(search, query, choice, api_name="search_places")
        query.change(search, query, choice, api_visibility="private", trigger_mode="always_last")
        # every way of picking a place re-centres the disk; the disk's change fills the rest
        choice.change(functools.partial(H.explore_view, session), [choice, explore_disk], explore_disk,
                      api_name="explore")
        clicked.change(functools.partial(H.explore_click, session), [clicked, explore_disk], explore_disk,
                       api_name="explore_click")
        explore_outputs = [place_info, explore_map, distances, why, explore_learned]
        explore_disk.change(functools.partial(H.explore_panels, session), [explore_disk, explore_mode],
                            explore_outputs, api_visibility="private", trigger_mode="always_last")

        def switch_explore(mode, view):
            on = mode == "learned"
            *_, fig = H.explore_panels(session, view, mode)
            return gr.update(visible=not on), gr.update(visible=on, value=fig)

        explore_mode.change(switch_explore, [explore_mode, explore_disk], [explore_disk, explore_learned],
                            api_visibility="private")
    H.hold_uploads(demo)  # an upload is deleted when the last request that needs it is answered
    return demo


def launch_options() -> dict:
    """Host, port (GRADIO_SERVER_NAME / GRADIO_SERVER_PORT or PORT), upload limit, look."""
    import gradio as gr

    port = int(os.environ.get("GRADIO_SERVER_PORT", os.environ.get("PORT", "7860")))
    return {"server_name": os.environ.get("GRADIO_SERVER_NAME", "0.0.0.0"), "server_port": port,
            "max_file_size": MAX_UPLOAD, "show_error": False, "css": CSS, "head": HEAD,
            "theme": gr.themes.Soft(primary_hue="blue")}
