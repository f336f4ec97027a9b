import numpy as np
import pytest
import torch

from hierloc.eval import geoclip_bench as gb


def test_noise_model_scales_and_validates():
    cal = gb.CALIBRATED
    assert cal.at(0).isotropic == 0 and cal.at(0).share_displaced == 0
    assert cal.at(1) == cal
    assert cal.at(10).share_displaced == 1.0
    with pytest.raises(ValueError):
        gb.NoiseModel(share_displaced=1.5)


def test_displace_moves_points_by_the_asked_distance():
    from hierloc.geo.distance import haversine_km

    lat, lon = np.array([48.85, -33.9, 0.0]), np.array([2.35, 151.2, 179.9])
    d = np.array([10.0, 300.0, 2000.0])
    lat2, lon2 = gb.displace(lat, lon, d, np.array([0.3, 2.0, 1.5]))
    assert np.allclose(haversine_km(lat, lon, lat2, lon2), d, rtol=1e-3)
    assert (np.abs(lon2) <= 180).all()


def test_read_locations(tmp_path):
    f = tmp_path / "where.csv"
    f.write_text("name,LAT,LON\na,48.85,2.35\nb,,3\nc,95,0\nd,-33.9,151.2\n")
    lat, lon = gb.read_locations(f)
    assert lat.tolist() == [48.85, -33.9] and lon.tolist() == [2.35, 151.2]
    (tmp_path / "bad.csv").write_text("x,y\n1,2\n")
    with pytest.raises(ValueError, match="latitude and longitude"):
        gb.read_locations(tmp_path / "bad.csv")


def test_photo_features_are_loc_at_zero_noise_and_blur_with_noise():
    from hierloc.data.place_features import load_geoclip_location_encoder

    enc = load_geoclip_location_encoder()
    lat, lon = np.array([48.85, 35.68, -22.9]), np.array([2.35, 139.69, -43.2])
    clean = gb.location_unit(enc, lat, lon)
    assert torch.allclose(gb.photo_features(enc, lat, lon, gb.CALIBRATED.at(0)), clean, atol=1e-6)
    noisy = gb.photo_features(enc, lat, lon, gb.NoiseModel(share_displaced=0.0), seed=3)
    cos = (noisy * clean).sum(1)
    # isotropic s = 3.5 in 512-d keeps cos near 1 / sqrt(1 + s^2) = 0.27
    assert ((cos > 0.15) & (cos < 0.4)).all()
    assert torch.allclose(noisy.norm(dim=1), torch.ones(3))


@pytest.mark.slow
def test_benchmark_runs_and_the_shipped_decoder_is_never_worse_than_retrieval():
    """A small run of the real benchmark (offline hierarchy, GeoCLIP encoder and gallery):
    the tree posterior is within a point of the best baseline (here, far above: the
    property the README's full run shows at every noise level)."""
    res = gb.run(n_photos=150, levels=(0.0, 1.0), seed=4)
    assert res["photos"] == 150 and len(res["levels"]) == 2
    for block in res["levels"]:
        r = block["results"]
        assert set(r) == set(gb.DECODERS)
        gap = gb.shortfall(r, "zero-shot, tree posterior (shipped)")
        counts = r["flat nearest city"]["level_counts"]
        # a small sample: allow one point plus two photos' worth of sampling noise per level
        for lv, n in counts.items():
            assert gap[lv] <= 1 + 200 / n, (lv, gap)
        assert gap["geoscore"] <= 1, gap
        # the paired gap is the accuracy gap, read per photo
        for lv in counts:
            pg = block["paired"]["zero-shot, tree posterior (shipped)"]["flat nearest city"][lv]
            acc_gap = 100 * (r["zero-shot, tree posterior (shipped)"]["accuracy"][lv]
                             - r["flat nearest city"]["accuracy"][lv])
            assert pg["diff"] == pytest.approx(acc_gap, abs=0.01) and pg["low"] <= pg["diff"] <= pg["high"]
            assert pg["photos"] == counts[lv]
        assert set(block["paired"]) == set(gb.DECODERS) - set(gb.BASELINES)
    clean = res["levels"][0]["results"]
    assert clean["zero-shot, tree posterior (shipped)"]["accuracy"]["country"] >= 0.97
    noisy = res["levels"][1]["results"]
    assert (noisy["zero-shot, tree posterior (shipped)"]["accuracy"]["country"]
            > noisy["zero-shot, centroid beam (before)"]["accuracy"]["country"] + 0.2)
    md = gb.markdown(res)
    assert "Not accuracy on real photos" in md and "Calibration" in md
    assert "- zero-shot, tree posterior (shipped) against GeoCLIP gallery retrieval: " in md


def test_training_and_the_benchmark_share_one_noise_module_and_do_not_import_each_other():
    import ast
    from pathlib import Path

    from hierloc.data import geoclip_space as gs
    from hierloc.data import pseudo_photos as pp

    root = Path(gb.__file__).resolve().parents[1]
    for mod, other in (("data/geoclip_space.py", "hierloc.eval.geoclip_bench"),
                       ("eval/geoclip_bench.py", "hierloc.data.geoclip_space")):
        tree = ast.parse((root / mod).read_text())
        imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert other not in imported and "hierloc.data.pseudo_photos" in imported
    # the same objects, not copies: training draws exactly what the benchmark scores
    assert gb.CALIBRATED is pp.CALIBRATED and gs.noisy_features is pp.noisy_features
    assert gb.location_unit is gs.location_unit is pp.location_unit
