"""HierLoc web app: `python app.py`, then open http://localhost:7860.

Thin on purpose: build what the UI needs, build the Blocks, launch under __main__.
"""

from __future__ import annotations

import logging

from hierloc.ui.app import build_demo, launch_options

logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

if __name__ == "__main__":
    demo = build_demo()
    demo.queue(default_concurrency_limit=4).launch(**launch_options())
