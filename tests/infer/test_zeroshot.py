import numpy as np
import pytest
import torch

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
