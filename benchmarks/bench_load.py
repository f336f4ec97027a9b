"""Load and soak test of the app, on the loopback only: `python app.py` started here on
127.0.0.1 (a free port), N clients each sending R photos through the predict API at once,
the same photo for all or a different one per request; bounded in requests and time; the
app it started is stopped at the end. Prints (or --json) answered / errors, latency p50 /
p95, and the app's memory (resident set, the process and its children) before and after.

    python benchmarks/bench_load.py --clients 64 --requests 2 --same      # a class, one photo
    python benchmarks/bench_load.py --clients 64 --requests 3              # a photo each
    python benchmarks/bench_load.py --soak 10 --clients 8                  # 8 clients for 10 minutes

The app answers with whatever model it resolves here (offline: the preview); HIERLOC_MODEL
chooses another.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from bench_app import EXAMPLE, ROOT, free_port  # noqa: E402 (beside this script)


def rss_mb(pid: int) -> float:
    """Resident memory of a process and its children, MB (Linux /proc)."""
    total = 0
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
            children = Path(f"/proc/{p}/task/{p}/children").read_text().split()
            todo += [int(c) for c in children]
        except OSError:
            continue
    return round(total / 1024, 1)


def photos(n: int, folder: Path, same: bool) -> list[Path]:
    """The example photo once (same), or n different files of it (a pixel changed each)."""
    from PIL import Image

    if same:
        dst = folder / "0000.jpg"
        dst.write_bytes(EXAMPLE.read_bytes())
        return [dst] * n
    base = np.asarray(Image.open(EXAMPLE).convert("RGB")).copy()
    out = []
    for i in range(n):
        img = base.copy()
        img[i % img.shape[0], (i // img.shape[0]) % img.shape[1]] ^= 0xFF
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="JPEG", quality=92)
        dst = folder / f"{i:04d}.jpg"
        dst.write_bytes(buf.getvalue())
        out.append(dst)
    return out


def start_app(port: int, api_batch: int | None = None, uploads: Path | None = None,
              timeout: float = 300.0) -> subprocess.Popen:
    env = {**os.environ, "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port),
           "GRADIO_ANALYTICS_ENABLED": "False"}
    if uploads is not None:  # where the app's Gradio files uploads (to count what is left)
        env["GRADIO_TEMP_DIR"] = str(uploads)
    if api_batch:
        env["HIERLOC_API_BATCH"] = str(api_batch)
    proc = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"the app exited with {proc.returncode} before it answered")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                time.sleep(2.0)  # the port is open a moment before the routes are
                return proc
        except OSError:
            time.sleep(0.5)
    stop_app(proc)
    raise RuntimeError(f"the app did not open port {port} within {timeout:.0f} s")


def stop_app(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(proc.pid, signal.SIGKILL)


def run_load(url: str, files: list[Path], clients: int, requests: int, deadline: float,
             soak_until: float | None = None) -> dict:
    """Each client sends its requests one after another (all clients at once); with
    soak_until, each keeps sending until then. -> latencies (s), errors."""
    from gradio_client import Client, handle_file

    lat, errors = [], []
    counter = iter(range(10 ** 9))

    def client_loop(c: int):
        client = Client(url, verbose=False)
        done = 0
        while time.time() < deadline and (done < requests if soak_until is None else time.time() < soak_until):
            f = files[next(counter) % len(files)]
            t = time.perf_counter()
            try:
                ans = client.predict(handle_file(str(f)), api_name="/predict")
                if ans.get("ok"):
                    lat.append(time.perf_counter() - t)
                else:
                    errors.append(str(ans.get("error")))
            except Exception as exc:  # a refused or failed request counts as an error
                errors.append(f"{type(exc).__name__}: {exc}")
            done += 1

    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(client_loop, range(clients)))
    return {"latencies": lat, "errors": errors}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--requests", type=int, default=2, help="requests per client")
    ap.add_argument("--same", action="store_true", help="every request sends the same photo")
    ap.add_argument("--soak", type=float, default=0.0, metavar="MINUTES",
                    help="keep every client sending for this long (after a warm-up of one request each)")
    ap.add_argument("--timeout", type=float, default=1800.0, help="stop sending after this many seconds")
    ap.add_argument("--api-batch", type=int, help="the app's HIERLOC_API_BATCH (1: no batching; default: the app's)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    with tempfile.TemporaryDirectory() as tmp:
        n = args.clients * max(args.requests, 1)
        sent = Path(tmp) / "sent"
        sent.mkdir()
        files = photos(min(n, 512), sent, args.same)
        uploads = Path(tmp) / "uploads"
        proc = start_app(port, args.api_batch, uploads)
        try:
            # warm-up: one request from every client at once (the model, its caches and the
            # allocator's pools for a full batch), so that "before" is the app under this load
            warm = run_load(url, files, args.clients, 1, time.time() + 600)
            before = rss_mb(proc.pid)
            t0 = time.time()
            deadline = t0 + args.timeout
            soak_until = t0 + 60 * args.soak if args.soak else None
            trace, stop = [], threading.Event()

            def sample():  # the app's memory every 30 s while it is under load
                while not stop.wait(30):
                    trace.append((round(time.time() - t0), rss_mb(proc.pid)))

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            res = run_load(url, files, args.clients, args.requests, deadline, soak_until)
            stop.set()
            wall = time.time() - t0
            after = rss_mb(proc.pid)
            names = {f.name for f in files}
            left = sorted(str(p.relative_to(uploads)) for p in uploads.rglob("*") if p.name in names)
        finally:
            stop_app(proc)
    lat = np.array(res["latencies"])
    out = {"clients": args.clients, "api_batch": args.api_batch or "app default", "requests_per_client": args.requests if not args.soak else None,
           "soak_minutes": args.soak or None, "same_photo": args.same,
           "answered": int(len(lat)), "errors": len(res["errors"]), "first_errors": res["errors"][:3],
           "p50_s": round(float(np.percentile(lat, 50)), 2) if len(lat) else None,
           "p95_s": round(float(np.percentile(lat, 95)), 2) if len(lat) else None,
           "wall_s": round(wall, 1), "warm_up_ok": not warm["errors"],
           "uploads_left_on_disk": len(left),
           "memory_mb": {"before": before, "after": after, "every_30_s": trace,
                         "growth_pct": round(100 * (after - before) / before, 1) if before else None}}
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print(f"{out['answered']} answered, {out['errors']} errors ({out['clients']} clients"
              + (f" x {args.requests}" if not args.soak else f", {args.soak} min soak")
              + (", the same photo" if args.same else ", a photo each") + f") in {out['wall_s']} s; "
              f"latency p50 {out['p50_s']} s, p95 {out['p95_s']} s; app memory {before} -> {after} MB; "
              f"uploaded photos left on disk: {len(left)}")
        for e in out["first_errors"]:
            print("  error:", e)
    return 0 if out["errors"] == 0 and not left else 1


if __name__ == "__main__":
    raise SystemExit(main())
