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


def test_noise_likelihood_matches_the_projected_normal_integrated_numerically():
    """log p(u | w) of u = normalise(w + s n) in 512-d, as a function of t = cos(u, w):
    the closed form against the density integrated over the radius with scipy (up to the
    constant, so compared as differences), and its slope near the calibrated temperature."""
    from scipy.integrate import quad

    d, s = 512, gb.CALIBRATED.isotropic
    s2 = s * s / d

    def log_numeric(t):  # log of integral r^(d-1) exp(-(r^2 - 2 r t + 1) / (2 s2)) dr, scaled at its peak
        peak = (t + np.sqrt(t * t + 4 * (d - 1) * s2)) / 2
        f = lambda r: np.exp((d - 1) * np.log(r / peak) - (r * r - 2 * r * t - peak * peak + 2 * peak * t) / (2 * s2))
        val, _ = quad(f, peak * 0.5, peak * 1.5, limit=200)
        return np.log(val) + (d - 1) * np.log(peak) - (peak * peak - 2 * peak * t + 1) / (2 * s2)

    ts = [0.05, 0.2, 0.27, 0.4, 0.6]
    closed = gb.noise_log_likelihood(torch.tensor(ts, dtype=torch.float64), gb.CALIBRATED).numpy()
    numeric = np.array([log_numeric(t) for t in ts])
    assert np.allclose(closed - closed[0], numeric - numeric[0], atol=0.05)
    slope = float(gb.noise_log_likelihood(torch.tensor([0.28], dtype=torch.float64), gb.CALIBRATED)
                  - gb.noise_log_likelihood(torch.tensor([0.26], dtype=torch.float64), gb.CALIBRATED)) / 0.02
    assert 145 < slope < 160  # the zero-shot posterior's 150 is this slope
    with pytest.raises(ValueError):
        gb.noise_log_likelihood(torch.tensor([0.3]), gb.CALIBRATED.at(0))


def test_location_prior_gives_each_kind_its_share_and_cities_their_population():
    from hierloc.geo.places import default_places
    from hierloc.model.support import location_log_prior

    table = default_places()
    n_city = table.level_size(3)
    p = torch.softmax(location_log_prior(table, n_city + 1000, 0.3).double(), 0)
    assert float(p[n_city:].sum()) == pytest.approx(0.3) and float(p[n_city:].std()) < 1e-12
    pop = np.nan_to_num(table.population[table.level_slice(3)], nan=1000.0).clip(min=1000.0)
    assert np.allclose(p[:n_city].numpy(), 0.7 * pop / pop.sum())
    assert torch.isinf(location_log_prior(table, n_city + 10, 0.0)[n_city:]).all()


@pytest.mark.slow
def test_bayes_decoder_is_level_with_the_tree_posterior_and_knows_the_split():
    """The Bayes decoder of the photos' own distribution on a small real run: ahead of
    or level with the shipped tree posterior (both read the same support points; it has the
    exact prior), and an answer never outside the split's cells' points."""
    space = gb.Space()
    dec = {"Bayes": gb.bayes_decoder(gb.CALIBRATED, "train"), **{k: gb.DECODERS[k] for k in
           ("GeoCLIP gallery retrieval", "zero-shot, tree posterior (shipped)")}}
    res = gb.run(n_photos=300, where="gallery", levels=(1.0,), decoders=dec, seed=5, space=space, split="train")
    r = res["levels"][0]["results"]
    for lv in ("country", "region"):
        assert r["Bayes"]["accuracy"][lv] >= r["zero-shot, tree posterior (shipped)"]["accuracy"][lv] - 0.03
    assert r["Bayes"]["geoscore"] > r["GeoCLIP gallery retrieval"]["geoscore"] - 100
    # photos at held-out points, decoded with the training cells' prior: cities of training cells only
    from hierloc.data.pseudo_photos import in_split, sample_locations

    lat, lon = sample_locations(40, "gallery", 6, table=space.table, split="test")
    u = gb.photo_features(space.encoder, lat, lon, gb.CALIBRATED.at(0.3), seed=7)
    out = gb.bayes_decoder(gb.CALIBRATED.at(0.3), "train")(space, u)
    assert in_split(out.lat_deg, out.lon_deg, "train").mean() > 0.9  # answers lie by training-cell points
