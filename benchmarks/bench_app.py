"""The app's figures: cold start, upload-to-outputs time without the backbone, peak
memory of the running app, and 8 concurrent requests.

    python benchmarks/bench_app.py [--model preview] [--runs 10]

Starts `python app.py` as a user would (HIERLOC_MODEL picks the profile), on a free port.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "assets" / "examples" / "517681129360654.jpg"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def vm(pid: int, field: str) -> float:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(field):
            return int(line.split()[1]) / 1024
    return float("nan")


def handler_latency_ms(runs: int) -> dict:
    """locate() end to end with the real preview model, minus the backbone's share."""
    from hierloc.infer.predictor import Predictor, preview_engine
    from hierloc.ui import handlers as H

    pred = Predictor(preview_engine())
    session = H.Session("preview", ["preview"], loader=lambda p: pred)
    H.locate(session, str(EXAMPLE), 10, 5, True, None)  # warm-up (outlines, caches)
    total, rest = [], []
    for _ in range(runs):
        t0 = time.perf_counter()
        *_, answer = H.locate(session, str(EXAMPLE), 10, 5, True, None)
        ms = (time.perf_counter() - t0) * 1000
        total.append(ms)
        rest.append(ms - answer["timings_ms"]["encode"])
    return {"total_ms": round(statistics.median(total), 1), "without_backbone_ms": round(statistics.median(rest), 1)}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="preview")
    ap.add_argument("--runs", type=int, default=10)
    args = ap.parse_args(argv)
    res = {"model": args.model, "runs": args.runs, "handler": handler_latency_ms(args.runs)}
    port = free_port()
    env = {**os.environ, "HIERLOC_MODEL": args.model, "GRADIO_SERVER_PORT": str(port),
           "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_ANALYTICS_ENABLED": "False"}
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/"
    try:
        while True:
            try:
                urllib.request.urlopen(url, timeout=1)
                break
            except OSError:
                if proc.poll() is not None or time.perf_counter() - t0 > 300:
                    raise SystemExit("the app did not start")
                time.sleep(0.2)
        res["cold_start_s"] = round(time.perf_counter() - t0, 1)
        from gradio_client import Client, handle_file

        client = Client(url, verbose=False)
        first = client.predict(handle_file(str(EXAMPLE)), 10, 5, True, args.model, api_name="/predict")

        def one(_):
            c = Client(url, verbose=False)
            return c.predict(handle_file(str(EXAMPLE)), 10, 5, True, args.model, api_name="/predict")

        t1 = time.perf_counter()
        with ThreadPoolExecutor(8) as pool:
            outs = list(pool.map(one, range(8)))
        res["concurrent_8"] = {"seconds": round(time.perf_counter() - t1, 2),
                               "all_ok": all(o["ok"] for o in outs),
                               "all_same_answer": all(o["path"] == first["path"] for o in outs)}
        res["peak_memory_mb"] = round(vm(proc.pid, "VmHWM"), 0)
        res["resident_memory_mb"] = round(vm(proc.pid, "VmRSS"), 0)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
