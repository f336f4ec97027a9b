import pytest

from hierloc.data.features import FeatureCache
from hierloc.data.osv5m import OSV5M, DatasetUnavailable


@pytest.fixture(scope="module")
def root(data_dir):
    return data_dir / "osv5m"


def test_reader_streams_photos_out_of_the_zip_shard(root):
    ds = OSV5M(root, "train")
    assert len(ds) == 5
    photos = list(ds.iter_photos())
    ok = [p for p in photos if p.image is not None]
    assert len(ok) == 4 and all(p.image.mode == "RGB" and min(p.image.size) > 100 for p in ok)
    missing = [p for p in photos if p.image is None]
    assert [p.id for p in missing] == ["999"] and "not found" in missing[0].error
    assert ok[0].row["unique_city"].endswith(ok[0].row["country"])


def test_limit_and_countries(root):
    assert len(OSV5M(root, "train", limit=2)) == 2
    ds = OSV5M(root, "train", countries=["GB", "NO"])
    assert sorted(ds.rows["country"]) == ["GB", "NO"]


def test_missing_copy_says_how_to_get_it(tmp_path):
    with pytest.raises(DatasetUnavailable, match="hierloc data download"):
        OSV5M(tmp_path, "train")


def test_download_offline_is_a_clear_error(tmp_path, monkeypatch):
    import hierloc.hub
    from hierloc.data import osv5m

    monkeypatch.setattr(hierloc.hub, "hub_reachable", lambda *a, **k: False)
    with pytest.raises(DatasetUnavailable, match="cannot be reached"):
        osv5m.download(tmp_path, "test")


class _Interrupt(Exception):
    pass


def test_feature_cache_resumes_after_an_interruption(root, tmp_path):
    from hierloc.model.backbones import load_backbone

    backbone = load_backbone("tiny")
    cache = FeatureCache(tmp_path / "feats")
    ds = OSV5M(root, "train")

    def interrupted():
        for i, photo in enumerate(ds.iter_photos()):
            if i == 3:
                raise _Interrupt()
            yield photo

    with pytest.raises(_Interrupt):
        cache.extract(backbone, interrupted(), shard_size=2, batch_size=1)
    first = cache.done_ids()
    assert len(first) == 2  # one finished shard of 2 survived; the third photo was lost
    seen = []

    def recording():
        for p in ds.iter_photos(skip=cache.done_ids()):
            seen.append(p.id)
            yield p

    man = cache.extract(backbone, recording(), shard_size=2, batch_size=1)
    assert not (set(seen) & first)  # finished work is not redone
    ids, feats = cache.load()
    assert sorted(ids) == sorted(set(ds.rows["id"]) - {"999"}) and len(ids) == len(set(ids))
    assert feats.shape == (4, 32) and str(feats.dtype) == "torch.float16"
    assert man["failed"] == {"999": "not found in any image shard"}
    # the features are the backbone's: recompute one and compare
    photo = next(p for p in ds.iter_photos() if p.id == ids[0])
    assert (backbone.encode_images([photo.image])[0].half() == feats[0]).all()


def test_cache_refuses_another_backbone(root, tmp_path):
    from hierloc.model.backbones import load_backbone

    cache = FeatureCache(tmp_path)
    cache.extract(load_backbone("tiny"), OSV5M(root, "test").iter_photos())

    class Other:
        name, feat_dim = "other", 8

    with pytest.raises(ValueError, match="holds features of tiny"):
        cache.extract(Other(), [])
