import shutil

import pandas as pd

from hierloc.eval.folder import evaluate_folder
from hierloc.eval.metrics import PUBLISHED_IM2GPS3K, km_table
from hierloc.paths import ASSETS_DIR
from tests.ui.fakes import fake_predictor


def test_im2gps3k_label_layout(tmp_path):
    """Im2GPS3k's labels (IMG_ID, LAT, LON; the photo named by IMG_ID) are read as file,
    latitude, longitude; a bad file gets its reason and the rest are scored."""
    photos = sorted((ASSETS_DIR / "examples").glob("*.jpg"))[:2]
    assert len(photos) == 2
    for p in photos:
        shutil.copy(p, tmp_path / p.name)
    (tmp_path / "broken.jpg").write_text("not a photo")
    labels = tmp_path / "im2gps3k_places365.csv"
    pd.DataFrame({"IMG_ID": [photos[0].name, photos[1].name, "broken.jpg"],
                  "AUTHOR": ["a", "b", "c"], "LAT": [48.85, -33.9, 0.0], "LON": [2.35, 151.2, 0.0],
                  "S16": [1, 2, 3]}).to_csv(labels, index=False)
    pred = fake_predictor()
    res = evaluate_folder(tmp_path, labels, predictor=pred)
    assert res["layout"] == "im2gps3k"
    assert res["n_photos"] == 3 and res["n_read"] == 2 and res["n_with_gps"] == 2
    assert list(res["failed"]) == ["broken.jpg"]
    # the fake always answers the same city: the distances follow from it
    from hierloc.geo.distance import haversine_km

    p = pred.predict(photos[0])
    d = haversine_km(p.latitude, p.longitude, [48.85, -33.9], [2.35, 151.2])
    assert abs(res["median_km"] - float(sorted(d)[0] + sorted(d)[1]) / 2) < 1e-6
    table = km_table({"HierLoc (trained)": res})
    assert "| HierLoc (trained) |" in table
    for name in PUBLISHED_IM2GPS3K:
        assert f"{name} (published, Im2GPS3k)" in table
