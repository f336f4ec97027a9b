import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hierloc.images import ImageError, load_image, read_exif_gps

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data" / "exif-samples"
DATA = Path(__file__).resolve().parents[1] / "data" / "exif"


def _png(img) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG" if img.mode not in ("CMYK",) else "JPEG")
    return buf.getvalue()


def _gray(img):
    return np.asarray(img.convert("L").resize((60, 45)), dtype=float).ravel()


def test_orientation_samples_are_upright():
    from PIL import ImageOps

    ref = _gray(load_image(DATA / "landscape_1.jpg"))
    for i in range(2, 9):
        img = load_image(DATA / f"landscape_{i}.jpg")
        assert img.size == (600, 450), i
        # the same picture the same way up (the files differ in tone, not in layout) ...
        assert np.corrcoef(_gray(img), ref)[0, 1] > 0.95, i
        # ... and clearly better matched than its mirror image or upside-down version
        for wrong in (ImageOps.mirror(img), ImageOps.flip(img)):
            assert np.corrcoef(_gray(wrong), ref)[0, 1] < 0.8, i


@pytest.mark.parametrize("name,lat,lon", [
    ("DSCN0010.jpg", 43.467, 11.885), ("DSCN0042.jpg", 43.464, 11.881),
    ("HMD_Nokia_8.3_5G_hdr.heif", 40.663, -3.764)])
def test_exif_gps(name, lat, lon):
    gps = read_exif_gps(DATA / name)
    assert gps is not None
    assert gps.lat_deg == pytest.approx(lat, abs=2e-3) and gps.lon_deg == pytest.approx(lon, abs=2e-3)


def test_no_gps_and_broken_exif_are_none_not_errors():
    assert read_exif_gps(DATA / "Canon_40D.jpg") is None
    assert read_exif_gps(DATA / "corrupted.jpg") is None
    assert load_image(DATA / "corrupted.jpg").mode == "RGB"


def test_heif_loads():
    img = load_image(DATA / "HMD_Nokia_8.3_5G_hdr.heif")
    assert img.mode == "RGB" and img.size[0] > 1000


@pytest.mark.parametrize("mode", ["RGBA", "P", "CMYK", "I;16", "L", "LA", "F"])
def test_modes_become_rgb(mode):
    base = Image.new("RGB", (64, 48), (200, 30, 30))
    img = base.convert(mode) if mode not in ("I;16", "F") else Image.fromarray(
        (np.arange(64 * 48).reshape(48, 64) * (20 if mode == "I;16" else 0.5)).astype(np.uint16 if mode == "I;16" else np.float32))
    out = load_image(_png(img) if mode not in ("F", "I;16") else _tiff(img))
    assert out.mode == "RGB" and out.size == (64, 48)
    if mode in ("RGBA", "P", "CMYK"):
        assert abs(int(out.getpixel((10, 10))[0]) - 200) < 20


def _tiff(img) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="TIFF")
    return buf.getvalue()


def test_transparent_pixels_become_white():
    img = Image.new("RGBA", (32, 32), (0, 0, 0, 0))
    assert load_image(_png(img)).getpixel((5, 5)) == (255, 255, 255)


def test_animated_gif_first_frame():
    frames = [Image.new("RGB", (40, 40), c) for c in [(255, 0, 0), (0, 0, 255)]]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:])
    out = load_image(buf.getvalue())
    assert out.getpixel((5, 5))[0] > 200


@pytest.mark.parametrize("payload,message", [
    (b"", "empty"), (b"hello, this is text", "not an image we can read"),
])
def test_bad_bytes(payload, message):
    with pytest.raises(ImageError, match=message):
        load_image(payload)


def test_truncated_jpeg_and_tiny_image_and_bomb():
    data = (DATA / "landscape_1.jpg").read_bytes()
    with pytest.raises(ImageError, match="damaged or truncated"):
        load_image(data[: len(data) // 2])
    with pytest.raises(ImageError, match="only 1x1"):
        load_image(_png(Image.new("RGB", (1, 1))))
    bomb = io.BytesIO()
    Image.new("1", (30000, 30000)).save(bomb, format="PNG")  # a few KB on disk, 900 Mpx decoded
    with pytest.raises(ImageError, match="too large"):
        load_image(bomb.getvalue())
