"""What the app's buttons do: thin functions over a Predictor and the viz builders.

Handlers never raise to the page: bad input comes back as a plain message. Uploaded
photos are read once and their temporary copy is deleted at the end of the request;
nothing about them is logged.
"""

from __future__ import annotations

import collections
import html
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from hierloc import LEVELS
from hierloc.viz import LEVEL_COLORS

log = logging.getLogger(__name__)

PROFILE_LABELS = {"trained": "trained HierLoc checkpoint", "zero-shot": "zero-shot (CLIP + GeoCLIP)",
                  "preview": "offline preview (untrained)"}
CANDIDATE_COLUMNS = ["rank", "score", "country", "region", "sub-region", "city", "latitude", "longitude"]


@dataclass
class Example:
    file: Path
    latitude: float
    longitude: float
    label: str
    contributor: str


@dataclass
class Session:
    """Predictors by profile (loaded on first use) and the examples' ground truth."""

    default_profile: str
    available: list
    predictors: dict = field(default_factory=dict)
    examples: dict = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    loader: object = None  # profile -> Predictor (tests pass a fake)
    startup: "StartupDownload | None" = None  # a first start's download, while it runs
    labels: dict = field(default_factory=dict)  # profile -> its name in the Model menu (else PROFILE_LABELS)

    def label(self, profile: str) -> str:
        return self.labels.get(profile, PROFILE_LABELS.get(profile, profile))

    def predictor(self, profile: str | None = None):
        profile = profile or self.default_profile
        if profile not in self.available:
            profile = self.default_profile
        if self.startup is not None and profile in self.startup.waiting and not self.startup.ready:
            profile = "preview"  # its weights are still coming: the offline preview answers meanwhile
        with self.lock:
            if profile not in self.predictors:
                self.predictors[profile] = self.loader(profile)
            return self.predictors[profile]


STARTUP_NAMES = {"zero-shot": ("zero-shot model", "Zero-shot"),
                 "trained": ("trained HierLoc model", "The trained HierLoc model")}
"""How the first start's messages name the profile that waits for CLIP ViT-L/14."""


class StartupDownload:
    """A first start with a profile that reads photos through CLIP ViT-L/14 (zero-shot, or
    the GeoCLIP-space trained checkpoint) but CLIP not yet in the cache: the weights are
    downloaded in the background while the page is up and the offline preview answers; the
    page shows the progress (startup_html) and ``profile`` takes over when it is loaded.
    ``waiting``: every profile that needs those weights (the preview answers for each until
    they are here; default: ``profile`` alone). ``fetch`` (download.fetch_clip) and ``load``
    (profile -> Predictor) are given so that tests can fake them."""

    def __init__(self, session: Session, profile: str = "zero-shot", fetch=None, load=None, start: bool = True,
                 waiting: tuple = ()):
        from hierloc.download import Progress, fetch_clip

        self.session, self.profile = session, profile
        self.waiting = tuple(waiting) or (profile,)
        self.progress = Progress()
        self.fetch = fetch or fetch_clip
        self.load = load or session.loader
        self.thread = threading.Thread(target=self.run, daemon=True, name="hierloc-first-start")
        if start:
            self.thread.start()

    @property
    def ready(self) -> bool:
        return self.progress.stage == "ready"

    def run(self) -> None:
        try:
            self.fetch(self.progress)
            self.progress.stage = "loading"
            predictor = self.load(self.profile)
            with self.session.lock:
                self.session.predictors[self.profile] = predictor
            self.progress.stage = "ready"
            log.info("first start: %s is ready", self.profile)
        except Exception as exc:  # the preview keeps answering; the page says what happened
            self.progress.stage, self.progress.error = "failed", f"{type(exc).__name__}: {exc}"
            log.warning("first start: %s could not be made ready (%s); the offline preview answers",
                        self.profile, self.progress.error)


def startup_html(session: Session) -> str:
    """The first start's progress for the page ('' when there is nothing to say)."""
    job = session.startup
    if job is None:
        return ""
    p = job.progress
    name, Name = STARTUP_NAMES.get(job.profile, (job.profile, job.profile))
    mb = lambda b: f"{b / 2 ** 20:,.0f} MB" if b < 2 ** 30 else f"{b / 2 ** 30:.2f} GB"  # noqa: E731
    if p.stage == "ready":
        return (f'<div class="hl-startup hl-startup-ready" role="status">{Name} is ready: CLIP ViT-L/14 is '
                f'downloaded and loaded, and it answers every photo from now on.</div>')
    if p.stage == "failed":
        return (f'<div class="hl-startup hl-startup-failed" role="alert">The {name} could not be made ready '
                f'({html.escape(p.error)}). The offline preview answers (untrained: not a real prediction); restart '
                f'the app to try again.</div>')
    if p.stage == "loading":
        what = "Loading CLIP ViT-L/14 and preparing the places (a few seconds)..."
        pct = 100.0
    else:
        pct = 100 * p.fraction
        eta = p.eta_s()
        left = f", about {eta:,.0f} s left" if eta is not None and p.done_bytes else ""
        total = f" of {mb(p.total_bytes)}" if p.total_bytes else ""
        what = (f"Downloading CLIP ViT-L/14 from the Hugging Face hub: {mb(p.done_bytes)}{total}"
                f" ({pct:.0f}%{left}).")
    return (f'<div class="hl-startup" role="status"><b>Getting the {name} ready (first start only).</b> '
            f'{what} Meanwhile the offline preview answers (untrained: not a real prediction).'
            f'<div class="hl-startup-bar"><span style="width:{pct:.1f}%"></span></div></div>')


def atlas_about(table) -> str:
    """The atlas in a paragraph, with the numbers `atlas stats` measured on it (shipped in
    assets/places/atlas_stats.json for the shipped hierarchy)."""
    import json

    from hierloc.paths import ASSETS_DIR

    text = ("**The places you see.** The Poincare disk and the Explore tab draw the **atlas**: every place of the "
            "hierarchy embedded in the hyperbolic plane, constructed as a tree (no learning, no projection): each "
            "place beyond its parent, its children fanned out in their order on the map, each child's share of the "
            "fan as large as its subtree. ")
    try:
        stats = json.loads((ASSETS_DIR / "places" / "atlas_stats.json").read_text())
    except (OSError, ValueError):
        stats = None
    if stats and stats.get("table_hash") == table.content_hash():
        r = stats["max_radius"]
        text += (f"Measured on all {stats['places']:,} places: {100 * stats['farther_than_parent']['all']:.0f}% lie "
                 f"further from the Earth's point than their parent, for {100 * stats['nearest_up_is_parent']['all']:.0f}% "
                 f"the nearest place one level up is their parent, for "
                 f"{100 * stats['nearest_same_level_is_sibling']['all']:.0f}% the nearest place of their own level is "
                 f"a sibling; countries lie {r['country']:.0f} from the Earth's point, cities up to {r['city']:.0f}. ")
    return text + ("The photo is placed by the answer of the model that answers, whichever it is: at the weighted "
                   "median of the cities it gives probability to.")


def geometry_about(predictor) -> str:
    """Whose places the disk and Explore draw, with the numbers that say whether it is a
    tree: the atlas, and the learned geometry one click away."""
    from hierloc.eval.hierarchy_geometry import describe

    text = atlas_about(predictor.table)
    view = predictor.engine.place_view()
    if view.trained and view.stats:
        origin = f", {html.escape(view.origin)}" if view.origin else ""
        return (text + "\n\n**One click away** (the switch above each disk): the places as the "
                f"{html.escape(view.label.removeprefix('places: '))} holds them{origin}. In it, "
                + describe(view.stats))
    if view.trained:
        return text + f"\n\n**One click away**: the places of {html.escape(view.label)}."
    return text + ("\n\n**One click away**: the untrained preview's own places, a random geometry, not a learned "
                   "one (no trained checkpoint is present).")


def load_examples(folder: Path) -> dict[str, Example]:
    labels = folder / "labels.csv"
    if not labels.exists():
        return {}
    df = pd.read_csv(labels, dtype=str, keep_default_na=False)
    out = {}
    for r in df.itertuples(index=False):
        r = r._asdict()
        path = folder / r["file"]
        if path.exists() and r.get("latitude"):
            label = ", ".join(v for v in (r.get("city"), r.get("region"), r.get("country")) if v)
            out[path.name] = Example(path, float(r["latitude"]), float(r["longitude"]), label, r.get("contributor", ""))
    return out


def _is_ours(path: Path) -> bool:
    from hierloc.paths import ASSETS_DIR

    try:
        path.resolve().relative_to(ASSETS_DIR.resolve())
        return True
    except ValueError:
        return False


class UploadHolds:
    """How many requests still need each uploaded file. Gradio files identical uploads
    under one path (a folder named by their content), so the same photo sent by many people
    at once is one file: every upload of it takes a hold (counted when Gradio files it, see
    hold_uploads), every answered request gives one back, and the file is deleted when the
    last hold is given back, never while another request of the same content waits."""

    def __init__(self):
        self._lock = threading.Lock()
        self._holds: dict[str, int] = {}
        self.seen = collections.deque(maxlen=4096)  # the latest paths held (what a test checks is gone)

    @staticmethod
    def _key(path) -> str:
        return str(Path(path).resolve())

    def hold(self, paths) -> None:
        with self._lock:
            for p in paths:
                k = self._key(p)
                self._holds[k] = self._holds.get(k, 0) + 1
                self.seen.append(k)

    def release(self, path) -> bool:
        """Give one hold back; True when it was the last (the caller deletes the file)."""
        with self._lock:
            k = self._key(path)
            n = self._holds.get(k, 0) - 1
            if n > 0:
                self._holds[k] = n
                return False
            self._holds.pop(k, None)
            return True

    def held(self, path) -> int:
        with self._lock:
            return self._holds.get(self._key(path), 0)


_HOLDS = UploadHolds()


def upload_holds() -> UploadHolds:
    return _HOLDS


def hold_uploads(demo) -> None:
    """Count every upload Gradio files for this app (its set of uploaded files, updated by
    its upload route with the paths of each upload) as a hold on that file."""
    class _Held(set):
        def update(self, *others):
            for paths in others:
                paths = list(paths)
                _HOLDS.hold(paths)
                super().update(paths)

    held = _Held(demo.upload_file_set)
    demo.temp_file_sets = [held if s is demo.upload_file_set else s for s in demo.temp_file_sets]
    demo.upload_file_set = held


def _forget_upload(path: str | None, session: Session) -> None:
    """Give back this request's hold on an uploaded photo and delete it when no other
    request still needs it (never an example: the page reuses those)."""
    if not path:
        return
    p = Path(path)
    if _is_ours(p) or p.name in session.examples:
        return
    if _HOLDS.release(p) and p.exists():
        try:
            p.unlink()
        except OSError:
            pass


# ---------------------------------------------------------------------------------------
# rendering
# ---------------------------------------------------------------------------------------
def _bar(conf: float, color: str) -> str:
    pct = max(0.0, min(1.0, conf)) * 100
    return (f'<span class="hl-bar" title="confidence {pct:.1f}%"><span style="width:{pct:.0f}%;background:{color}">'
            f'</span></span><span class="hl-pct">{pct:.0f}%</span>')


def result_html(pred, truth: Example | None = None, truth_gps=None) -> str:
    """The answer first, in words: the path with flags and per-level confidence."""
    if not pred.ok:
        return f'<div class="hl-error" role="alert">{html.escape(pred.error or "Something went wrong.")}</div>'
    parts = []
    for place in pred.path:
        name = place["name"] or f"(no {place['level']} name)"
        flag = flag_html(pred.country_code, name) if place["level"] == "country" else ""
        parts.append(f'<div class="hl-step"><span class="hl-level" style="color:{LEVEL_COLORS[place["level"]]}">'
                     f'{place["level"]}</span><span class="hl-name">{flag}{html.escape(name)}</span>'
                     f'{_bar(place["confidence"], LEVEL_COLORS[place["level"]])}</div>')
    lat, lon = pred.latitude, pred.longitude
    coords = f"{abs(lat):.3f}&deg; {'N' if lat >= 0 else 'S'}, {abs(lon):.3f}&deg; {'E' if lon >= 0 else 'W'}"
    extra = ""
    if truth is not None or truth_gps is not None:
        from hierloc.geo.distance import haversine_km

        tlat, tlon = (truth.latitude, truth.longitude) if truth is not None else truth_gps
        km = float(haversine_km(lat, lon, tlat, tlon))
        where = f"{html.escape(truth.label)} (example label)" if truth is not None else "photo's GPS tag"
        extra = f'<div class="hl-truth">True location: {where}, <b>{km:,.0f} km</b> from the guess.</div>'
    from hierloc.infer.predictor import UNTRAINED_BANNER

    banner = (f'<div class="hl-banner" role="status">Preview: {UNTRAINED_BANNER}. This model has not been trained '
              f'to locate photos; the answer shows how the app works, not where the photo was taken.</div>'
              if pred.untrained else "")
    raw = ('<div class="hl-note">These percentages are the model\'s raw scores: they have not been fitted to how '
           'often it is right (see the README, "Confidences").</div>' if not (pred.untrained or pred.calibrated) else "")
    return (f'{banner}<div class="hl-result"><div class="hl-path">{"".join(parts)}</div>{raw}'
            f'<div class="hl-coords">{coords} &middot; answered by <b>{html.escape(PROFILE_LABELS.get(pred.profile, pred.profile))}</b>'
            f'</div>{extra}</div>')


_FLAGS: dict = {}


def flag_html(cc: str | None, country: str = "") -> str:
    """The country's flag as an image (shipped SVG, inlined), '' when there is none. An
    image, not an emoji: flag emoji show as two empty boxes without a colour emoji font."""
    import base64

    from hierloc.paths import ASSETS_DIR

    code = (cc or "").lower()
    if not (len(code) == 2 and code.isalpha()):
        return ""
    if code not in _FLAGS:
        f = ASSETS_DIR / "flags" / f"{code}.svg"
        _FLAGS[code] = base64.b64encode(f.read_bytes()).decode() if f.exists() else ""
    if not _FLAGS[code]:
        return ""
    return (f'<img class="hl-flag" src="data:image/svg+xml;base64,{_FLAGS[code]}" '
            f'alt="flag of {html.escape(country or cc)}" width="32" height="24"> ')


def candidates_frame(pred) -> pd.DataFrame:
    rows = []
    for c in pred.candidates if pred.ok else []:
        names = [p["name"] or "-" for p in c["path"]]
        rows.append([c["rank"], c["score"], *names, round(c["latitude"], 4), round(c["longitude"], 4)])
    return pd.DataFrame(rows, columns=CANDIDATE_COLUMNS)


def empty_map_html(message: str = "The map appears here after a photo is located.") -> str:
    return f'<div class="hl-placeholder">{html.escape(message)}</div>'


# ---------------------------------------------------------------------------------------
# handlers
# ---------------------------------------------------------------------------------------
def locate(session: Session, image_path: str | None, beam: int, top_k: int, use_exif: bool, profile: str | None,
           disk_mode: str = "atlas"):
    """-> (result html, map html, atlas disk view, learned-geometry figure (only when
    disk_mode is "learned"), candidates frame, prediction dict, learned disk data)."""
    from hierloc.viz.map import prediction_map, to_iframe

    if not image_path:
        return (result_html_message("Drop a photo, or pick an example, to see where it was taken."),
                empty_map_html(), atlas_message("The photo and its places appear here after a photo is located."),
                None, candidates_frame_empty(), {}, None)
    try:
        predictor = session.predictor(profile)
        example = session.examples.get(Path(image_path).name)
        pred = predictor.predict(image_path, beam=int(beam), top_k=int(top_k), use_exif=bool(use_exif),
                                 name=Path(image_path).name)
    finally:
        _forget_upload(image_path, session)
    if not pred.ok:
        return (result_html(pred), empty_map_html("No map: the photo could not be read."),
                atlas_message("No disk: the photo could not be read."), None, candidates_frame_empty(),
                pred.to_dict(), None)
    truth_gps = (pred.exif_latitude, pred.exif_longitude) if use_exif and pred.exif_latitude is not None else None
    truth = example
    table = predictor.table
    t0 = time.perf_counter()
    m = prediction_map(pred, table, truth=(truth.latitude, truth.longitude) if truth else truth_gps)
    map_html = to_iframe(m)
    view = answer_view(predictor, pred.disk["atlas"])
    learned = {"predictor": predictor, **pred.disk["learned"]}  # drawn when asked for (a State, never sent)
    fig = learned_figure(learned) if disk_mode == "learned" else None
    pred.timings_ms["figures"] = round((time.perf_counter() - t0) * 1000, 1)
    pred.timings_ms["total"] = round(pred.timings_ms.get("total", 0.0) + pred.timings_ms["figures"], 1)
    out = pred.to_dict()
    if truth is not None:
        from hierloc.geo.distance import haversine_km

        out["example_truth"] = {"latitude": truth.latitude, "longitude": truth.longitude, "label": truth.label,
                                "error_km": float(haversine_km(pred.latitude, pred.longitude, truth.latitude, truth.longitude))}
    return result_html(pred, truth, truth_gps), map_html, view, fig, candidates_frame(pred), out, learned


# ---------------------------------------------------------------------------------------
# the Poincare disk: the atlas (default) and the learned geometry
# ---------------------------------------------------------------------------------------
DISK_MODES = [("Atlas: every place, laid out exactly as a tree", "atlas"),
              ("Checkpoint: the places as the trained HierLoc checkpoint holds them", "learned")]


def atlas_message(text: str) -> dict:
    return {"kind": "atlas", "message": text}


def learned_figure(learned: dict | None, title: str = ""):
    """The learned-geometry figure of an answer: from Prediction.disk["learned"] (the
    photo's point and paths, turned into the places to draw here, only when asked for)."""
    import torch

    from hierloc.viz.disk import disk_figure

    if not learned:
        return None
    if "places" not in learned:
        learned = learned["predictor"].learned_disk(torch.tensor(learned["z"]), torch.tensor(learned["paths"]))
    return disk_figure(learned, title)


def answer_focus(table, placement: dict) -> int:
    """Which place a photo's disk opens on: the parent of the deepest place holding more
    than half of the answer's probability, so that the photo is seen among that place and
    its siblings; the country itself when only the country does, or when not even a
    country does (then the photo is seen pulled away from it, toward the Earth's point)."""
    depth = max(int(placement.get("depth", -1)), 0)
    row = table.get(str(placement["path"][depth]))
    if row is None:
        return -1
    return row if depth == 0 else int(table.parent[row])


def answer_view(predictor, placement: dict, focus: int | None = None, prev: dict | None = None) -> dict:
    """The atlas view of an answer (Prediction.disk["atlas"])."""
    from hierloc.viz.atlas_view import focus_view, photo_from_dict

    table, atlas = predictor.table, predictor.atlas
    photo = photo_from_dict(atlas, table, placement, trusted=True)
    if photo is None:
        return atlas_message("This answer gives no city a probability: there is no photo to place.")
    cands = [r for r in (table.get(k) for k in placement.get("candidates", [])) if r is not None]
    view = focus_view(atlas, table, answer_focus(table, placement) if focus is None else focus, photo, cands, prev)
    view["state"]["table"] = table.content_hash()
    return view


def _predictor_for_table(session: Session, table_hash: str | None):
    for p in list(session.predictors.values()):
        if p.table.content_hash() == table_hash:
            return p
    return session.predictor()


def atlas_refocus(session: Session, state_json, key):
    """The disk's click: the same view (photo and all), re-centred on ``key``. The state
    comes back from the page, so everything in it is checked; the photo's point is
    recomputed from its cities, never read."""
    import json

    from hierloc.viz.atlas_view import EARTH_KEY, focus_view, photo_from_dict

    try:
        state = json.loads(state_json) if isinstance(state_json, str) else dict(state_json or {})
        if not isinstance(state, dict):
            raise ValueError
    except (TypeError, ValueError):
        state = {}
    predictor = _predictor_for_table(session, state.get("table"))
    table, atlas = predictor.table, predictor.atlas
    row = -1 if key in (None, "", EARTH_KEY) else table.get(str(key))
    if row is None:
        return None
    photo = photo_from_dict(atlas, table, state.get("photo"))
    cands = []
    if photo is not None:
        cands = [r for r in (table.get(str(k)) for k in list(state["photo"].get("candidates", []))[:20]) if r is not None]
    view = focus_view(atlas, table, row, photo, cands, prev=state)
    view["state"]["table"] = table.content_hash()
    return view


def predict_api(session: Session, image_path: str | None, beam: int = 10, top_k: int = 5, use_exif: bool = True,
                profile: str | None = None) -> dict:
    """The JSON answer for one API request (the app batches them: predict_api_batch)."""
    return predict_api_batch(session, [image_path], [beam], [top_k], [use_exif], [profile])[0][0]


API_BATCH = max(1, int(os.environ.get("HIERLOC_API_BATCH", "16")))
"""Most predict-API requests answered in one pass of the image encoder (Gradio batches the
requests that wait together); HIERLOC_API_BATCH=1 answers them one by one. 16: measured with 64 clients on a 2-core Xeon
(benchmarks/bench_load.py), p95 8.3 s against 9.3 s at 8 and 15.1 s one by one."""


def predict_api_batch(session: Session, paths: list, beams: list, top_ks: list, use_exifs: list,
                      profiles: list) -> list:
    """predict_api for a batch of requests (Gradio's batch=True: a list per input): the
    requests with the same settings go through the encoder together (Predictor.predict_many);
    each gets its own answer; every upload is given back at the end -> [answers]."""
    out: list = [None] * len(paths)
    groups: dict = {}
    for i, (path, beam, top_k, exif, profile) in enumerate(zip(paths, beams, top_ks, use_exifs, profiles)):
        if not path:
            out[i] = {"ok": False, "error": "no photo was sent"}
            continue
        groups.setdefault((int(beam), int(top_k), bool(exif), profile), []).append(i)
    try:
        for (beam, top_k, exif, profile), idx in groups.items():
            try:
                preds = session.predictor(profile).predict_many(
                    [paths[i] for i in idx], beam=beam, top_k=top_k, use_exif=exif, with_disk=False,
                    names=[Path(paths[i]).name for i in idx], batch=API_BATCH)
                for i, pred in zip(idx, preds):
                    out[i] = pred.to_dict()
            except Exception as exc:  # one group's failure is its requests' answer, not the batch's
                log.exception("predict API batch failed")
                for i in idx:
                    out[i] = {"ok": False, "error": f"the model could not answer ({type(exc).__name__}: {exc})"}
    finally:
        for path in paths:
            _forget_upload(path, session)
    return [out]


def result_html_message(text: str) -> str:
    return f'<div class="hl-placeholder">{html.escape(text)}</div>'


def candidates_frame_empty() -> pd.DataFrame:
    return pd.DataFrame(columns=CANDIDATE_COLUMNS)


def search_places(session: Session, query: str, limit: int = 25) -> list[tuple[str, str]]:
    """Places whose name starts with (then contains) the query, big ones first: (label, key)."""
    table = session.predictor().table
    q = (query or "").strip().casefold()
    if len(q) < 2:
        return []
    names = _lower_names(table)
    starts = np.flatnonzero(np.char.startswith(names, q))
    contains = np.flatnonzero(np.char.find(names, q) >= 0) if len(starts) < limit else np.array([], dtype=int)
    rows = list(dict.fromkeys([*starts.tolist(), *contains.tolist()]))
    pop = np.nan_to_num(table.population[rows], nan=0.0) + 1e9 * (3 - table.level[rows])  # coarse levels first
    rows = [rows[i] for i in np.argsort(-pop, kind="stable")[:limit]]
    return [(f"{', '.join(reversed(table.path_names(r)))} ({LEVELS[int(table.level[r])]})", str(table.key[r])) for r in rows]


_NAMES_CACHE: dict = {}


def _lower_names(table) -> np.ndarray:
    if id(table) not in _NAMES_CACHE:
        _NAMES_CACHE[id(table)] = np.char.lower(table.name.astype(str))
    return _NAMES_CACHE[id(table)]


DISTANCE_COLUMNS = ["place", "level", "relation", "distance"]


def explore_view(session: Session, key: str | None, current: dict | None = None) -> dict:
    """The Explore disk re-centred on a place (``key``; None or "earth": the Earth's point),
    moving from the view on screen (``current``) when there is one."""
    from hierloc.viz.atlas_view import EARTH_KEY, focus_view

    predictor = session.predictor()
    table, atlas = predictor.table, predictor.atlas
    row = -1 if key in (None, "", EARTH_KEY) else table.get(str(key))
    if row is None:
        return current if isinstance(current, dict) and current.get("points") else focus_view(atlas, table, -1)
    prev = current.get("state") if isinstance(current, dict) else None
    view = focus_view(atlas, table, row, prev=prev if prev and prev.get("focus") != view_key(table, row) else None)
    view["state"]["table"] = table.content_hash()
    return view


def view_key(table, row: int) -> str:
    from hierloc.viz.atlas_view import EARTH_KEY

    return EARTH_KEY if row < 0 else str(table.key[row])


def explore_panels(session: Session, view: dict | None, disk_mode: str = "atlas"):
    """Everything beside the Explore disk, for the place it is centred on -> (place html,
    map html, distances frame, why-hyperbolic markdown, learned-geometry figure or None)."""
    from hierloc.viz.atlas_view import EARTH_KEY, teaching_numbers, teaching_text
    from hierloc.viz.map import place_map, to_iframe

    predictor = session.predictor()
    table, atlas = predictor.table, predictor.atlas
    key = view.get("focus") if isinstance(view, dict) else None
    row = -1 if key in (None, EARTH_KEY) else table.get(str(key))
    if row is None:
        return (result_html_message("Search for a place, click the map, or click a place in the disk."),
                empty_map_html("Pick a place to see it here."), pd.DataFrame(columns=DISTANCE_COLUMNS), "", None)
    kids = table.children(row) if row >= 0 else np.arange(table.level_slice(0).start, table.level_slice(0).stop)
    m = place_map(table, row, children=list(kids))
    info = _place_info(table, row, len(kids))
    nums = teaching_numbers(atlas, table, row)
    fig = None
    if disk_mode == "learned" and row >= 0:
        from hierloc.viz.disk import disk_figure, place_disk

        disk, _ = place_disk(predictor.engine, table, row)
        fig = disk_figure(disk, title=table.display_name(row))
    return info, to_iframe(m, height=420), _distances(atlas, table, row, kids), teaching_text(nums), fig


def _place_info(table, row: int, n_kids: int) -> str:
    from hierloc.viz.atlas_view import PLURAL

    if row < 0:
        return (f'<div class="hl-result"><div class="hl-path-inline">The Earth</div><div class="hl-coords">'
                f'the root of the hierarchy &middot; {n_kids} countries</div></div>')
    path = " &rsaquo; ".join(
        f'<span style="color:{LEVEL_COLORS[LEVELS[int(table.level[r])]]}">'
        f'{flag_html(str(table.country_code[r]), table.display_name(r)) if table.level[r] == 0 else ""}'
        f'{html.escape(table.display_name(r))}</span>' for r in table.ancestors(row))
    level = LEVELS[int(table.level[row])]
    below = PLURAL[LEVELS[int(table.level[row]) + 1]] if row >= 0 and table.level[row] < 3 else "children"
    return (f'<div class="hl-result"><div class="hl-path-inline">{path}</div><div class="hl-coords">'
            f'{level} &middot; {n_kids} {below if n_kids != 1 else "child"} &middot; centroid '
            f'{table.lat_deg[row]:.3f}, {table.lon_deg[row]:.3f}</div></div>')


def _distances(atlas, table, row: int, kids, max_children: int = 40) -> pd.DataFrame:
    """Exact atlas distances from the place to its ancestors (the Earth's point included)
    and to its children (the nearest ``max_children``)."""
    from hierloc.viz.atlas_view import PLURAL  # noqa: F401 (names)

    rows = []
    if row >= 0:
        rows.append(["the Earth", "earth", "ancestor", round(float(atlas.rho[row]), 3)])
        for r in table.ancestors(row)[:-1]:
            rows.append([table.display_name(r), LEVELS[int(table.level[r])], "ancestor",
                         round(float(atlas.dist(row, r)), 3)])
    kids = np.asarray(kids, dtype=np.int64)
    if len(kids):
        d = atlas.dist(np.full(len(kids), row), kids) if row >= 0 else atlas.rho[kids]
        for i in np.argsort(d, kind="stable")[:max_children]:
            rows.append([table.display_name(int(kids[i])), LEVELS[int(table.level[kids[i]])], "child", round(float(d[i]), 3)])
    return pd.DataFrame(rows, columns=DISTANCE_COLUMNS)


def explore_click(session: Session, text: str, current: dict | None = None):
    """A map click 'lat,lon' -> the city there (polygon lookup) -> its view."""
    try:
        lat, lon = (float(v) for v in (text or "").split(","))
    except ValueError:
        return current
    table = session.predictor().table
    try:
        row = int(_geocoder(table).lookup([lat], [lon])[0])
    except ValueError:
        return current
    return explore_view(session, str(table.key[row]), current)


_GEOCODERS: dict = {}


def _geocoder(table):
    from hierloc.geo.reverse import ReverseGeocoder

    if id(table) not in _GEOCODERS:
        _GEOCODERS[id(table)] = ReverseGeocoder(table)
    return _GEOCODERS[id(table)]


# ---------------------------------------------------------------------------------------
# many photos at once
# ---------------------------------------------------------------------------------------
MAX_BATCH_FILES = 500
UNTRAINED_NOTE = "Preview: untrained: not a real prediction; these guesses are not real answers"
MAX_ZIP_BYTES = 500 * 2 ** 20
BATCH_COLUMNS = ["file", "path", "confidence", "latitude", "longitude", "true location", "error km", "problem"]


def _unzip(path: Path, into: Path, room: int) -> list[tuple[str, Path]]:
    """The files of a zip (no folders, no links, nothing outside ``into``), at most ``room``
    of them and MAX_ZIP_BYTES uncompressed in all."""
    import zipfile

    out, total = [], 0
    with zipfile.ZipFile(path) as zf:
        for i, info in enumerate(zf.infolist()):
            name = Path(info.filename).name
            if info.is_dir() or not name or name.startswith(".") or "__MACOSX" in info.filename:
                continue
            total += info.file_size
            if len(out) >= room or total > MAX_ZIP_BYTES:
                raise ValueError(f"{path.name}: more than {room} files or {MAX_ZIP_BYTES // 2 ** 20} MB inside")
            target = into / f"{i:05d}_{name}"
            with zf.open(info) as src, open(target, "wb") as dst:
                dst.write(src.read())
            out.append((name, target))
    return out


def _expand_uploads(paths: list[str], work: Path) -> tuple[list[tuple[str, Path]], list[tuple[str, str]]]:
    """(name, file) of every photo in the uploads, zips opened; and (name, reason) of the
    uploads that could not be opened at all."""
    import zipfile

    items, bad = [], []
    for p in map(Path, paths):
        if p.suffix.lower() == ".csv":  # a labels file: read by locate_many, not a photo
            continue
        if p.suffix.lower() == ".zip":
            try:
                items += _unzip(p, work, MAX_BATCH_FILES - len(items))
            except (zipfile.BadZipFile, ValueError, OSError) as exc:
                bad.append((p.name, f"This zip file cannot be opened ({exc})."
                            if isinstance(exc, zipfile.BadZipFile) else str(exc)))
        else:
            items.append((p.name, p))
    return items[:MAX_BATCH_FILES], bad


def _uploaded_labels(paths: list[str]) -> tuple[dict, list]:
    """{photo file name: (lat, lon)} from uploaded CSV files (the layouts `eval --images`
    reads), and (name, reason) for those that cannot be read."""
    from hierloc.train.own_photos import read_labels

    out, bad = {}, []
    for p in map(Path, paths):
        if p.suffix.lower() != ".csv":
            continue
        try:
            out.update({k: v for k, v in read_labels(p).items() if np.isfinite(v[0]) and np.isfinite(v[1])})
        except (ValueError, OSError, pd.errors.ParserError) as exc:
            bad.append((p.name, f"This labels file cannot be read: {exc}"))
    return out, bad


def batch_evaluation(preds: list, truths: list) -> dict:
    """The benchmark's metrics of predictions against true GPS positions, as `eval
    --images` computes them from GPS-only labels (true places by the benchmark's reverse
    geocoding), beside always answering the most common true place of these photos."""
    from hierloc.eval.evaluate import reverse_geocoded_keys
    from hierloc.eval.metrics import all_metrics

    tlat = np.array([t[0] for t in truths], dtype=float)
    tlon = np.array([t[1] for t in truths], dtype=float)
    plat = np.array([p.latitude for p in preds], dtype=float)
    plon = np.array([p.longitude for p in preds], dtype=float)
    true = reverse_geocoded_keys(tlat, tlon)
    own = {lv: np.array([p.path[i]["key"] for p in preds], dtype=object) for i, lv in enumerate(LEVELS)}
    model = all_metrics(plat, plon, tlat, tlon, pred_keys=own, true_keys=true, rg_keys=reverse_geocoded_keys(plat, plon))
    n = len(preds)
    common = {lv: pd.Series(true[lv]).value_counts().index[0] for lv in LEVELS}
    from hierloc.geo.places import default_places

    geo = default_places()
    c = geo.index(common["city"])
    base = all_metrics(np.full(n, geo.lat_deg[c]), np.full(n, geo.lon_deg[c]), tlat, tlon,
                       pred_keys={lv: np.full(n, common[lv], dtype=object) for lv in LEVELS}, true_keys=true)
    return {"photos": n, "model": model, "most_common": base}


def evaluation_html(res: dict, model_label: str) -> str:
    from hierloc.eval.metrics import THRESHOLDS_KM

    def pct(v):
        return "-" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{100 * v:.1f}"

    head = "".join(f"<th>{h}</th>" for h in ["", "country", "region", "sub-region", "city",
                                               *[f"{t} km" for t in THRESHOLDS_KM], "median km", "GeoScore"])
    body = ""
    for name, m in ((model_label, res["model"]), ("always the most common place of these photos", res["most_common"])):
        cells = [pct(m["accuracy"].get(lv)) for lv in LEVELS] + [pct(m["acc_km"][str(t)]) for t in THRESHOLDS_KM]
        body += (f"<tr><td>{html.escape(name)}</td>" + "".join(f"<td>{c}</td>" for c in cells)
                 + f"<td>{m['median_km']:,.1f}</td><td>{m['geoscore']:.0f}</td></tr>")
    return (f'<div class="hl-batch-eval"><b>Scored on the {res["photos"]} photos whose true location is known</b> '
            f'(GPS tag, labels file or example label; places by the benchmark\'s reverse geocoding, as '
            f'<code>hierloc eval --images</code> scores them); accuracy and within-km in %. The most-common-place row '
            f'knows these photos\' own places, so it is an optimistic baseline.'
            f'<table class="hl-eval-table"><tr>{head}</tr>{body}</table></div>')


def _batch_row(name: str, pred, truth) -> dict:
    if not pred.ok:
        return {"file": name, "path": "", "confidence": None, "latitude": None, "longitude": None,
                "true location": "", "error km": None, "problem": pred.error}
    conf = pred.path[3]["confidence"] if pred.path else None
    truth_text, err = "", pred.error_km
    if truth is not None:
        truth_text, err = f"{truth[0]:.4f}, {truth[1]:.4f} ({truth[2]})", truth[3]
    return {"file": name, "path": " > ".join(p["name"] or "-" for p in pred.path), "confidence": conf,
            "latitude": round(pred.latitude, 5), "longitude": round(pred.longitude, 5), "true location": truth_text,
            "error km": None if err is None else round(err, 1), "problem": ""}


def locate_many(session: Session, files, beam: int = 10, profile: str | None = None, progress=None):
    """Many photos (or zips of photos) -> (summary html, map html, rows, [CSV, GeoJSON]).
    Unreadable files get their row with the reason; every upload is deleted at the end."""
    import shutil
    import tempfile

    from hierloc.geo.distance import haversine_km
    from hierloc.infer.batch import record, write
    from hierloc.viz.map import batch_map, to_iframe

    paths = [f if isinstance(f, str) else getattr(f, "name", str(f)) for f in (files or [])]
    if not paths:
        return (result_html_message("Drop several photos, or a zip of photos, to locate them all at once."),
                empty_map_html("The map of all the guesses appears here."), pd.DataFrame(columns=BATCH_COLUMNS), None)
    work = Path(tempfile.mkdtemp(prefix="hierloc-batch-"))
    labels, label_problems = _uploaded_labels(paths)
    try:
        items, bad = _expand_uploads(paths, work)
        predictor = session.predictor(profile)
        preds = []
        step = 8
        for i in range(0, len(items), step):
            if progress is not None:
                progress(i / max(len(items), 1), desc=f"photo {i + 1} of {len(items)}")
            group = items[i:i + step]
            preds += predictor.predict_many([g[1] for g in group], beam=int(beam), top_k=1,
                                            names=[g[0] for g in group], batch=step)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        for p in paths:
            _forget_upload(p, session)
    rows, truths, records = [], [], []
    for (name, _), pred in zip(items, preds):
        truth = None
        ex = session.examples.get(name)
        if pred.ok and name in labels:
            tlat, tlon = labels[name]
            truth = (tlat, tlon, "labels", float(haversine_km(pred.latitude, pred.longitude, tlat, tlon)))
        elif pred.ok and ex is not None:
            truth = (ex.latitude, ex.longitude, ex.label,
                     float(haversine_km(pred.latitude, pred.longitude, ex.latitude, ex.longitude)))
        elif pred.ok and pred.exif_latitude is not None:
            truth = (pred.exif_latitude, pred.exif_longitude, "photo GPS", pred.error_km)
        rows.append(_batch_row(name, pred, truth))
        truths.append(truth)
        records.append(record(Path(name), pred))
    for name, reason in bad + label_problems:
        rows.append({**{c: None for c in BATCH_COLUMNS}, "file": name, "path": "", "true location": "", "problem": reason})
    out = Path(tempfile.mkdtemp(prefix="hierloc-results-"))
    downloads = []
    for fmt, ext in (("csv", "csv"), ("geojson", "geojson")):
        f = out / f"hierloc_results.{ext}"
        with open(f, "w", newline="") as fh:
            write(records, fmt, fh)
        downloads.append(str(f))
    ok = sum(p.ok for p in preds)
    summary = (f'<div class="hl-batch-summary">{ok} of {len(rows)} files located'
               + (f"; {len(rows) - ok} could not be read (see the table)" if len(rows) > ok else "")
               + (". " + html.escape(UNTRAINED_NOTE) if predictor.untrained else ".") + "</div>")
    good = [(p, t) for p, t in zip(preds, truths) if p.ok]
    map_html = (to_iframe(batch_map([p for p, _ in good], predictor.table, [t for _, t in good])) if good
                else empty_map_html("No photo could be located."))
    scored = [(p, t) for p, t in good if t is not None]
    if scored:
        summary += evaluation_html(batch_evaluation([p for p, _ in scored], [t[:2] for _, t in scored]),
                                   session.label(predictor.profile))
    if progress is not None:
        progress(1.0, desc="done")
    return summary, map_html, pd.DataFrame(rows, columns=BATCH_COLUMNS), downloads
