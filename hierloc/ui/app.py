"""Gradio Blocks for HierLoc."""

from __future__ import annotations

import os


def launch_options() -> dict:
    """Host and port (GRADIO_SERVER_NAME / GRADIO_SERVER_PORT or PORT), and upload limits."""
    port = int(os.environ.get("GRADIO_SERVER_PORT", os.environ.get("PORT", "7860")))
    return {"server_name": os.environ.get("GRADIO_SERVER_NAME", "0.0.0.0"), "server_port": port,
            "max_file_size": "25mb", "show_error": False}


def build_demo(places=None):
    """The app: for now, the place hierarchy's reverse lookup (lat, lon -> path)."""
    import gradio as gr

    from hierloc.geo.places import default_places
    from hierloc.geo.reverse import ReverseGeocoder

    table = places or default_places()
    geocoder = ReverseGeocoder(table)

    def lookup(lat: float, lon: float) -> str:
        try:
            row = int(geocoder.lookup([lat], [lon])[0])
        except ValueError as exc:
            raise gr.Error(str(exc)) from None
        return "  >  ".join(table.path_names(row))

    with gr.Blocks(title="HierLoc") as demo:
        gr.Markdown("# HierLoc - where on Earth?\nLook up the path of places of a coordinate.")
        with gr.Row():
            lat = gr.Number(label="Latitude", value=48.8566)
            lon = gr.Number(label="Longitude", value=2.3522)
        out = gr.Textbox(label="Place path")
        gr.Button("Look up").click(lookup, [lat, lon], out, api_name="lookup")
    return demo
