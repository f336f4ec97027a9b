"""Many people sending the same photo at once (a class, a game, a photo that goes round):
Gradio files identical uploads under one path, so the app must not delete it while
another request still needs it; afterwards no uploaded photo is left on disk."""

import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.ui.fakes import free_port

EXAMPLE = Path(__file__).resolve().parents[2] / "assets" / "examples" / "517681129360654.jpg"


@pytest.fixture(scope="module")
def app_url():
    app_url = _Url()
    from hierloc.infer.predictor import Predictor, preview_engine
    from hierloc.paths import ASSETS_DIR
    from hierloc.ui import handlers as H
    from hierloc.ui.app import build_demo, launch_options

    preview = Predictor(preview_engine())
    sizes = []  # how many photos each pass of the predictor took
    many = preview.predict_many

    def counted(sources, *args, **kwargs):
        sizes.append(len(sources))
        return many(sources, *args, **kwargs)

    preview.predict_many = counted
    app_url.sizes = sizes
    session = H.Session(default_profile="preview", available=["preview"], loader=lambda p: preview,
                        examples=H.load_examples(ASSETS_DIR / "examples"))
    demo = build_demo(session)
    opts = {**launch_options(), "server_name": "127.0.0.1", "server_port": free_port()}
    demo.queue(default_concurrency_limit=4).launch(prevent_thread_lock=True, quiet=True, **opts)
    app_url.url = f"http://127.0.0.1:{opts['server_port']}/"
    yield app_url
    demo.close()


class _Url:
    url: str
    sizes: list


def test_the_same_photo_from_many_clients_at_once_is_answered_every_time(app_url, tmp_path):
    from gradio_client import Client, handle_file

    photo = tmp_path / "0000.jpg"  # a photo of the user's, not one of the app's examples
    shutil.copy(EXAMPLE, photo)
    clients = [Client(app_url.url, verbose=False) for _ in range(12)]

    def send(client):
        return [client.predict(handle_file(str(photo)), api_name="/predict") for _ in range(2)]

    with ThreadPoolExecutor(len(clients)) as pool:
        answers = [a for batch in pool.map(send, clients) for a in batch]
    failed = [a.get("error") for a in answers if not a.get("ok")]
    assert not failed, f"{len(failed)} of {len(answers)} requests failed: {failed[:3]}"
    assert len(answers) == 24
    # requests that waited together went through the encoder together
    assert sum(app_url.sizes) == 24 and max(app_url.sizes) > 1, app_url.sizes
    # nothing of the photo is left where Gradio keeps uploads
    import gradio

    from hierloc.ui.handlers import upload_holds

    seen = [p for p in upload_holds().seen if Path(p).name == "0000.jpg"]
    assert seen and Path(seen[0]).is_relative_to(Path(gradio.utils.get_upload_folder()).resolve())
    left = [p for p in seen if Path(p).exists()]
    assert not left, left
    assert all(upload_holds().held(p) == 0 for p in seen)
