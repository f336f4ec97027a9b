"""A Space's first start: CLIP ViT-L/14's 1.7 GB arrive in the background while the page is
up, the page shows how far the download is, the preview answers meanwhile, zero-shot
takes over when ready; a second start uses the cache. The download is faked (no network
here): a fake hub writes the bytes into a real hub cache folder, slowly."""

import time
from pathlib import Path

import pytest

from hierloc import download as D
from hierloc.ui import handlers as H

CHROMIUM = "/usr/bin/chromium"
MB = 2 ** 20


@pytest.fixture()
def slow_hub(tmp_path, monkeypatch):
    """snapshot_download replaced by one that writes 24 MB into the hub cache in ~4 s."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(D, "repo_bytes", lambda repo, patterns=None: 24 * MB)

    def fake(repo_id, allow_patterns):
        blobs = tmp_path / "hub" / ("models--" + repo_id.replace("/", "--")) / "blobs"
        blobs.mkdir(parents=True, exist_ok=True)
        part = blobs / "0123abcd.incomplete"
        with open(part, "wb") as f:
            for _ in range(24):
                f.write(b"\0" * MB)
                f.flush()
                time.sleep(0.17)
        part.rename(blobs / "0123abcd")
        return str(tmp_path / "hub" / "snapshot")

    monkeypatch.setattr(D, "_snapshot_download", fake)
    return tmp_path


def _session(loaded):
    from tests.ui.fakes import fake_predictor

    preview = fake_predictor(untrained=True)
    zero = fake_predictor()
    zero.engine.profile = "zero-shot"

    def loader(profile):
        loaded.append(profile)
        return preview if profile == "preview" else zero

    return H.Session(default_profile="zero-shot", available=["zero-shot", "preview"], loader=loader), zero


def test_progress_then_ready_and_the_preview_answers_meanwhile(slow_hub):
    loaded = []
    session, zero = _session(loaded)
    session.startup = H.StartupDownload(session, fetch=lambda p: D.fetch_clip(p, poll_s=0.05))
    seen = []
    deadline = time.time() + 30
    while not session.startup.ready and time.time() < deadline:
        seen.append((session.startup.progress.stage, session.startup.progress.done_bytes))
        if session.startup.progress.stage == "downloading":
            assert session.predictor().untrained  # zero-shot asked for, the preview answers
        time.sleep(0.1)
    assert session.startup.ready and session.predictor() is zero
    sizes = [b for stage, b in seen if stage == "downloading"]
    assert len(set(sizes)) >= 3 and sizes == sorted(sizes)  # the page saw it grow
    assert "Zero-shot is ready" in H.startup_html(session)
    assert loaded.count("zero-shot") == 1


def test_a_failed_download_says_so_and_the_preview_keeps_answering():
    loaded = []
    session, _ = _session(loaded)

    def broken(progress):
        raise OSError("connection reset")

    session.startup = H.StartupDownload(session, fetch=broken)
    session.startup.thread.join(5)
    text = H.startup_html(session)
    assert "could not be made ready" in text and "connection reset" in text
    assert session.predictor().untrained


def test_a_second_start_uses_the_cache(monkeypatch):
    """default_session: a download only when the weights are not in the cache."""
    import hierloc.hub as hub
    import hierloc.infer.predictor as P
    from hierloc.ui import app

    started = []
    monkeypatch.setattr(P, "resolve_model", lambda explicit=None: P.Resolution("zero-shot", None, "test"))
    monkeypatch.setattr(P, "zeroshot_available", lambda: True)
    monkeypatch.setattr(H, "StartupDownload", lambda session, *a, **kw: started.append((session, a, kw)) or "job")
    monkeypatch.setattr(hub, "cached_file", lambda repo, names: "/cache/model.safetensors")
    assert app.default_session().startup is None and not started
    monkeypatch.setattr(hub, "cached_file", lambda repo, names: None)
    assert app.default_session().startup == "job" and len(started) == 1


@pytest.mark.browser
def test_the_page_shows_the_download(slow_hub, tmp_path):
    """What a person sees on a Space's first start, in a real browser."""
    import os
    import socket

    if not Path(CHROMIUM).exists():
        pytest.skip("Debian chromium is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    from hierloc.ui.app import build_demo, launch_options

    loaded = []
    session, _ = _session(loaded)
    session.startup = H.StartupDownload(session, fetch=lambda p: D.fetch_clip(p, poll_s=0.1), start=False)
    demo = build_demo(session)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    demo.queue().launch(prevent_thread_lock=True, quiet=True,
                        **{**launch_options(), "server_name": "127.0.0.1", "server_port": port})
    shots = Path(os.environ.get("HIERLOC_SCREENSHOTS", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    try:
        with sync_playwright() as p:
            b = p.chromium.launch(executable_path=CHROMIUM, args=[
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
            page = b.new_page(viewport={"width": 1280, "height": 800})
            page.goto(f"http://127.0.0.1:{port}/")
            session.startup.thread.start()
            page.wait_for_function("() => { const e = document.querySelector('#hl-startup'); return e && "
                                   "/Downloading CLIP ViT-L\\/14 .* MB of 24 MB \\(([1-9]\\d?)%/.test(e.innerText); }",
                                   timeout=30_000)
            assert "Meanwhile the offline preview answers" in page.inner_text("#hl-startup")
            page.screenshot(path=str(shots / "first_start_downloading.png"))
            page.wait_for_function("() => { const e = document.querySelector('#hl-startup'); "
                                   "return e && e.innerText.includes('Zero-shot is ready'); }", timeout=30_000)
            page.locator("#hl-startup").screenshot(path=str(shots / "first_start_ready.png"))
            b.close()
    finally:
        demo.close()


def test_a_first_start_with_the_trained_default_waits_for_clip_for_both_profiles(monkeypatch):
    """The shipped GeoCLIP-space checkpoint reads photos through CLIP ViT-L/14, as zero-shot
    does: with it as the default, a first start downloads CLIP in the background, the page
    names the model that waits, and the preview answers for both until the weights are here."""
    import hierloc.hub as hub
    import hierloc.infer.predictor as P
    from hierloc.ui import app
    from tests.model.test_shipped_checkpoint import SHIPPED
    from tests.ui.fakes import fake_predictor

    started = []
    monkeypatch.setattr(P, "resolve_model", lambda explicit=None: P.Resolution("trained", str(SHIPPED), "test"))
    monkeypatch.setattr(P, "zeroshot_available", lambda: True)
    monkeypatch.setattr(hub, "cached_file", lambda repo, names: None)
    monkeypatch.setattr(H, "StartupDownload", lambda session, *a, **kw: started.append((a, kw)) or "job")
    assert app.default_session().startup == "job"
    assert started == [(("trained",), {"waiting": ("trained", "zero-shot")})]

    preview, trained = fake_predictor(untrained=True), fake_predictor()
    session = H.Session(default_profile="trained", available=["trained", "zero-shot", "preview"],
                        loader=lambda p: preview if p == "preview" else trained)
    monkeypatch.undo()
    job = H.StartupDownload(session, "trained", fetch=lambda p: None, start=False, waiting=("trained", "zero-shot"))
    session.startup = job
    assert "Getting the trained HierLoc model ready" in H.startup_html(session)
    assert session.predictor().untrained and session.predictor("zero-shot").untrained
    job.run()
    assert session.predictor() is trained and "The trained HierLoc model is ready" in H.startup_html(session)
