import numpy as np
import pytest

from hierloc import LEVELS
from hierloc.geo.build import build_from_osv5m_csv
from hierloc.geo.places import PlaceTable, place_keys


def test_counts_match_the_geonames_file(places):
    c = places.counts()
    assert c["country"] == 246
    assert c["region"] == 3789
    assert 18_500 <= c["sub-region"] <= 19_500
    assert 141_000 <= c["city"] <= 143_000
    named = np.count_nonzero(places.name[places.level_slice("sub-region")] != "")
    assert 15_000 <= named <= 16_000


def test_every_place_has_a_chain_to_a_country(places):
    for lv in range(1, 4):
        sl = places.level_slice(lv)
        parents = places.parent[sl]
        assert np.all(parents >= 0)
        assert np.all(places.level[parents] == lv - 1)
    assert np.all(places.parent[places.level_slice("country")] == -1)
    city_rows = np.arange(*_bounds(places.level_slice("city")))
    countries = places.ancestor_at(city_rows, "country")
    assert np.all(places.level[countries] == 0)
    assert np.all(places.country_code[countries] == places.country_code[city_rows])


def test_keys_unique_and_in_osv5m_form(places):
    assert len(set(places.key.tolist())) == len(places)
    paris = places.index("Paris_Paris_Ile-de-France_FR")
    assert [places.key[r] for r in places.ancestors(paris)] == [
        "FR", "Ile-de-France_FR", "Paris_Ile-de-France_FR", "Paris_Paris_Ile-de-France_FR"]
    assert places.name[places.index("FR")] == "France"
    # empty parts are kept, spelled NaN (the benchmark's own example)
    assert places.get("Waitangi_NaN_Chatham Islands_NZ") is not None


def test_centroids_plausible(places):
    assert np.all(np.abs(places.lat_deg) <= 90) and np.all(np.abs(places.lon_deg) <= 180)
    paris = places.index("Paris_Paris_Ile-de-France_FR")
    assert places.lat_deg[paris] == pytest.approx(48.85, abs=0.05)
    # a country's centroid lies within its cities' bounding box
    fr = places.index("FR")
    cities = np.flatnonzero((places.country_code == "FR") & (places.level == 3))
    assert places.lat_deg[cities].min() <= places.lat_deg[fr] <= places.lat_deg[cities].max()
    # antimeridian: Fiji's centroid stays near Fiji, not in the mid-Pacific
    fj = places.index("FJ")
    assert abs(places.lon_deg[fj]) > 170


def test_children_index_is_the_inverse_of_parent(places):
    off = places.child_offsets
    assert off[-1] == len(places) - places.counts()["country"]
    for row in [places.index("FR"), places.index("Ile-de-France_FR")]:
        kids = places.children(row)
        assert len(kids) > 0 and np.all(places.parent[kids] == row)


def test_populations_where_known(places):
    paris = places.index("Paris_Paris_Ile-de-France_FR")
    assert places.population[paris] > 1_000_000


def test_save_load_round_trip(places, tmp_path):
    path = places.save(tmp_path / "p.parquet")
    again = PlaceTable.load(path)
    assert again.content_hash() == places.content_hash()
    assert again.boundary[places.index("FR")] == places.boundary[places.index("FR")]


def test_load_missing_file_says_how_to_build(tmp_path):
    with pytest.raises(FileNotFoundError, match="places build"):
        PlaceTable.load(tmp_path / "nope.parquet")


def test_osv5m_builder_on_real_layout(data_dir):
    table = build_from_osv5m_csv(data_dir / "osv5m_train_small.csv", link_boundaries=False)
    assert table.counts() == {"country": 6, "region": 6, "sub-region": 6, "city": 6}
    assert table.source == "osv5m"
    row = table.index("Ranerou_NaN_Matam_SN")
    assert [table.key[r] for r in table.ancestors(row)] == ["SN", "Matam_SN", "NaN_Matam_SN", row and "Ranerou_NaN_Matam_SN"]
    assert table.name[table.parent[row]] == ""  # empty sub-region: no display name
    assert table.n_points[row] == 3
    # centroid = mean of the member photos' coordinates
    assert table.lat_deg[row] == pytest.approx(15.21716889214568 + (0.001 - 0.002) / 3, abs=1e-7)
    assert table.name[table.index("GB")] == "United Kingdom"


def test_osv5m_builder_rejects_other_csv(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="not an OSV-5M CSV"):
        build_from_osv5m_csv(bad)


def test_place_keys_follow_the_convention():
    assert place_keys("NZ", "Chatham Islands", "", "Waitangi") == (
        "NZ", "Chatham Islands_NZ", "NaN_Chatham Islands_NZ", "Waitangi_NaN_Chatham Islands_NZ")


@pytest.mark.slow
def test_rebuild_reproduces_the_shipped_table(places):
    from hierloc.geo.build import build_from_geonames

    rebuilt = build_from_geonames()
    assert rebuilt.content_hash() == places.content_hash()
    assert list(rebuilt.boundary) == list(places.boundary)  # linking is deterministic


def _bounds(s):
    return s.start, s.stop


def test_levels_constant():
    assert LEVELS == ("country", "region", "sub-region", "city")


def test_outlines_real_for_country_and_region_approximate_for_sub_region(places):
    from hierloc.geo.boundaries import place_outline

    fr = place_outline(places, places.index("FR"))
    assert not fr.approximate and fr.geometry.contains(__import__("shapely").Point(2.35, 48.85))
    idf = place_outline(places, places.index("Ile-de-France_FR"))
    assert not idf.approximate and idf.geometry.contains(__import__("shapely").Point(2.35, 48.85))
    sub = place_outline(places, places.index("Cornwall_England_GB"))
    assert sub.approximate and "Voronoi" in sub.source
    assert sub.geometry.contains(__import__("shapely").Point(-4.958, 50.374))  # St Columb Major
    assert place_outline(places, places.index("Paris_Paris_Ile-de-France_FR")) is None
