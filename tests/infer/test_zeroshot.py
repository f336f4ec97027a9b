import numpy as np
import pytest
import torch

from hierloc.infer.confidence import tree_log_marginals
from hierloc.infer import zeroshot as zs
from hierloc.manifold import lorentz as L


def test_geodesic_ranking_equals_geoclip_similarity_ranking():
    g = torch.Generator().manual_seed(0)
    u = torch.randn(5, 512, generator=g, dtype=torch.float64)
    w = torch.randn(300, 512, generator=g, dtype=torch.float64)
    z = zs.photo_points(u).double()
    for lv in range(4):
        h = zs.place_points([w] * 4)[lv].double()
        d = L.dist(z[:, None, :], h[None, :, :])  # (5, 300), float64
        s = torch.nn.functional.normalize(u, dim=-1) @ torch.nn.functional.normalize(w, dim=-1).T
        assert torch.equal(torch.argsort(d, dim=1), torch.argsort(-s, dim=1))


def test_packaged_location_encoder_knows_geography():
    from hierloc.data.place_features import load_geoclip_location_encoder

    enc = load_geoclip_location_encoder()
    pts = torch.tensor([[48.8566, 2.3522], [48.8666, 2.3622], [51.5074, -0.1278], [35.6762, 139.6503]])
    with torch.no_grad():
        f = torch.nn.functional.normalize(enc(pts), dim=-1)
    sim = f[0] @ f.T
    assert sim[1] > sim[2] > sim[3]


@pytest.mark.slow
def test_our_image_path_reproduces_geoclips(data_dir):
    """Same random CLIP ViT-L/14 and MLP weights, same photo file: equal features."""
    from geoclip.model.image_encoder import ImageEncoder
    from PIL import Image

    from hierloc.images import load_image

    torch.manual_seed(0)
    theirs = ImageEncoder(from_pretrained=False).eval()
    ours = zs.load_image_path(random_weights=True)
    vision_state = {k: v for k, v in theirs.CLIP.state_dict().items() if k.startswith(("vision_model.", "visual_projection."))}
    missing, unexpected = ours.vision.load_state_dict(vision_state, strict=False)
    assert not unexpected and not [m for m in missing if "position_ids" not in m]
    ours.mlp.load_state_dict(theirs.mlp.state_dict())
    photo = data_dir / "osv5m" / "images"  # any real photo: take one from the test shard
    import zipfile
    with zipfile.ZipFile(photo / "test" / "00.zip") as zf:
        name = zf.namelist()[0]
        path = data_dir / "tmp_geoclip_photo.jpg"
        path.write_bytes(zf.read(name))
    try:
        with torch.no_grad(), Image.open(path) as im:
            ref = theirs(theirs.preprocess_image(im.convert("RGB")))
        mine = ours(ours.preprocess([load_image(path)]))
    finally:
        path.unlink()
    assert torch.allclose(mine, ref, atol=1e-5), (mine - ref).abs().max()
    assert np.isfinite(mine.numpy()).all()


# ---- the tree posterior -----------------------------------------------------------------
def _unit(x):
    return torch.nn.functional.normalize(x, dim=-1)


def _tiny_tree(n_a=30, seed=0):
    """Two countries, one region and one sub-region each. Country A: n_a cities spread
    wide (its centroid is like none of them); country B: one city. Returns the city
    features (n_a + 1, 512) and a TreePosterior over the cities alone."""
    g = torch.Generator().manual_seed(seed)
    cities = _unit(torch.randn(n_a + 1, 512, generator=g))
    parents = [2, torch.tensor([0, 1]), torch.tensor([0, 1]), torch.tensor([0] * n_a + [1])]
    latlon = np.stack([np.linspace(-10, 10, n_a + 1), np.linspace(0, 20, n_a + 1)], 1)
    post = zs.TreePosterior(cities, np.arange(n_a + 1), latlon, parents, (2, 2, 2, n_a + 1))
    return cities, post


def test_a_country_is_not_lost_because_its_centroid_is_far():
    cities, post = _tiny_tree()
    n_a = cities.shape[0] - 1
    # the photo is exactly city 3 of A, but B's only city is the more similar *centroid*
    photo = cities[3:4]
    b_city = _unit(0.5 * photo + 0.5 * _unit(torch.randn(1, 512, generator=torch.Generator().manual_seed(9))))
    cities[n_a] = b_city[0]
    post = zs.TreePosterior(cities, np.arange(n_a + 1), post.support_latlon.numpy(),
                            [2, torch.tensor([0, 1]), torch.tensor([0, 1]), torch.tensor([0] * n_a + [1])],
                            (2, 2, 2, n_a + 1))
    centroid_a = _unit(cities[:n_a].mean(0))
    assert float(photo[0] @ b_city[0]) > float(photo[0] @ centroid_a)  # centroids would choose B
    res = post.search(photo, k=3)
    assert res.best[0].tolist() == [0, 0, 0, 3]
    assert res.confidence[0, 0] > 0.99
    assert np.allclose(res.gps[0, 0].numpy(), post.support_latlon[3].numpy())


def test_posterior_masses_are_probabilities_and_paths_are_consistent():
    g = torch.Generator().manual_seed(1)
    n_city = 40
    city_parent = torch.arange(n_city) % 6          # 6 sub-regions
    sub_parent = torch.tensor([0, 0, 1, 1, 2, 2])   # 3 regions
    reg_parent = torch.tensor([0, 0, 1])            # 2 countries
    cities = _unit(torch.randn(n_city, 512, generator=g))
    extra = _unit(torch.randn(25, 512, generator=g))  # gallery-like points filed under cities
    support = torch.cat([cities, extra])
    support_city = np.concatenate([np.arange(n_city), np.arange(25) % n_city])
    latlon = np.random.default_rng(0).uniform(-50, 50, (len(support), 2))
    post = zs.TreePosterior(support, support_city, latlon, [2, reg_parent, sub_parent, city_parent],
                            (2, 3, 6, n_city), temperature=20.0)
    u = _unit(torch.randn(7, 512, generator=g))
    mass, logits = post.level_log_mass(u)
    for lv in range(4):
        assert torch.allclose(mass[lv].exp().sum(1), torch.ones(7, dtype=mass[lv].dtype), atol=1e-5)
    # brute force: city mass = normalised sum of exp(T cos) over its support points
    raw = torch.exp(20.0 * (u @ support.T)).double()
    city_mass = torch.zeros(7, n_city, dtype=torch.float64).index_add_(1, torch.as_tensor(support_city), raw)
    assert torch.allclose(mass[3].exp().double(), city_mass / city_mass.sum(1, keepdim=True), atol=1e-5)
    res = post.search(u, k=5)
    parents = [None, reg_parent, sub_parent, city_parent]
    assert post.confidence_temperatures == zs.CONFIDENCE_TEMPERATURES != (1.0, 1.0, 1.0, 1.0)
    shown = tree_log_marginals(mass, parents, zs.CONFIDENCE_TEMPERATURES)
    post.confidence_temperatures = (1.0, 1.0, 1.0, 1.0)  # uncalibrated: the masses themselves
    plain = post.search(u, k=5)
    assert torch.equal(plain.best, res.best)  # no answer depends on the temperatures (the candidates' order may)
    for b in range(7):
        for k in range(5):
            for lv in (1, 2, 3):
                assert int(parents[lv][res.paths[b, k, lv]]) == int(res.paths[b, k, lv - 1])
        # greedy: each level's answer has the largest mass among its siblings (cities: own point weighted)
        best = res.best[b]
        for lv in (1, 2):
            sibs = torch.nonzero(parents[lv] == best[lv - 1]).squeeze(1)
            assert int(sibs[mass[lv][b, sibs].argmax()]) == int(best[lv])
        sibs = torch.nonzero(parents[3] == best[2]).squeeze(1)  # the city: own point weighs CITY_WEIGHT
        weighted = city_mass[b] + (zs.CITY_WEIGHT - 1) * torch.exp(20.0 * (u[b] @ cities.T)).double()
        assert int(sibs[weighted[sibs].argmax()]) == int(best[3])
        assert int(best[0]) == int(mass[0][b].argmax())
        # shown: the masses with the confidence temperatures (infer.confidence)
        assert torch.allclose(res.confidence[b], torch.stack([shown[lv][b, best[lv]] for lv in range(4)]).exp())
        assert torch.allclose(plain.confidence[b], torch.stack([mass[lv][b, best[lv]] for lv in range(4)]).double().exp())
        # candidates after the first are distinct cities in decreasing probability as shown
        assert len(set(res.paths[b, :, 3].tolist())) == 5
        assert (res.probability[b, 1:].diff() <= 1e-7).all()
        assert torch.allclose(res.probability[b], shown[3][b, res.paths[b, :, 3]].exp())
        # GPS: the support point of largest cosine inside each city
        for k in range(5):
            inside = np.flatnonzero(support_city == int(res.paths[b, k, 3]))
            j = inside[int(logits[b, inside].argmax())]
            assert np.allclose(res.gps[b, k].numpy(), latlon[j])


def test_place_directions_pool_what_lies_below():
    cities, post = _tiny_tree(n_a=4)
    d = post.place_directions()
    assert torch.allclose(d[0][0], _unit(cities[:4].sum(0)), atol=1e-6)
    assert torch.allclose(d[3], cities, atol=1e-6)
    assert [x.shape[0] for x in d] == [2, 2, 2, 5]


def test_custom_gallery_from_a_csv_and_a_folder(tmp_path, data_dir):
    csv = tmp_path / "mine.csv"
    csv.write_text("latitude,longitude\n40.76,-111.89\n37.0,-113.5\nnot,a number\n")
    pts = zs.custom_gallery(csv)
    assert pts.shape == (2, 2) and pts[0, 0] == 40.76
    folder = tmp_path / "photos"
    folder.mkdir()
    import shutil

    shutil.copy(data_dir / "exif" / "DSCN0010.jpg", folder / "a.jpg")  # GPS in its EXIF (Arezzo)
    shutil.copy(data_dir / "exif" / "Canon_40D.jpg", folder / "b.jpg")  # no GPS: skipped
    pts = zs.custom_gallery(folder)
    assert pts.shape == (1, 2) and abs(pts[0, 0] - 43.467) < 0.01
    with pytest.raises(FileNotFoundError):
        zs.custom_gallery(tmp_path / "nowhere.csv")


@pytest.mark.slow
def test_gallery_points_join_the_posterior_and_answer(places):
    """A custom location becomes a support point under its city: a photo whose feature is
    that location's answers with that location's GPS."""
    from hierloc.data.place_features import location_features

    extra = np.array([[40.7608, -111.8910], [38.5733, -109.5498]])  # Salt Lake City, Moab
    city_feats = location_features(places)[3]
    base = zs.TreePosterior.for_table(places, city_feats)
    mine = zs.TreePosterior.for_table(places, city_feats, extra_latlon=extra)
    assert len(mine.support) == len(base.support) + 2
    u = zs.location_unit_cached(extra)
    res = mine.search(u, k=1)
    assert np.allclose(res.gps[:, 0].numpy(), extra, atol=1e-6)
    assert [str(places.key[places.level_slice(0).start + int(c)]) for c in res.best[:, 0]] == ["US", "US"]


def test_gallery_filing_is_cached_and_survives_a_broken_cache(tmp_path, monkeypatch):
    """The gallery's city rows are reverse geocoded once per table and kept; a cache file
    that is broken or of another size is filed again, never trusted."""
    from hierloc.geo.places import default_places

    monkeypatch.setenv("HIERLOC_CACHE", str(tmp_path))
    table = default_places()
    ll = zs.gallery_latlon()[:500]
    want = zs._file_under_cities(table, ll)
    assert np.array_equal(zs._gallery_cities(table, ll), want)
    (cache,) = (tmp_path / "location").glob("gallery-cities-*.npy")
    calls = []
    monkeypatch.setattr(zs, "_file_under_cities", lambda t, x: calls.append(1) or want)
    assert np.array_equal(zs._gallery_cities(table, ll), want) and not calls  # read from the cache
    cache.write_bytes(b"not an array")
    assert np.array_equal(zs._gallery_cities(table, ll), want) and len(calls) == 1
    np.save(cache, want[:10])
    assert np.array_equal(zs._gallery_cities(table, ll), want) and len(calls) == 2
    assert zs.geoclip_package_dir().joinpath("model", zs.GALLERY_FILE).exists()
