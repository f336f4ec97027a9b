"""HierLoc web app: `python app.py`, then open http://localhost:7860.

Thin on purpose: build what the UI needs, build the Blocks, launch under __main__.
"""

from __future__ import annotations

import logging
import os

# PyTorch's OpenMP threads busy-wait after each operation; on a CPU where ONNX Runtime
# runs the image encoder right after (infer.fast_encoder), they would take its cores.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from hierloc.ui.app import build_demo, launch_options  # noqa: E402

logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

if __name__ == "__main__":
    demo = build_demo()
    demo.queue(default_concurrency_limit=4).launch(**launch_options())
