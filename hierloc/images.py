"""Reading photos people upload: every common format, upright, RGB, with its GPS tag.

:func:`load_image` returns an upright 8-bit RGB PIL image or raises :class:`ImageError`
with a message meant for a person. It honours EXIF orientation and handles RGBA and
palette transparency (flattened on white), CMYK, 16-bit and float images, animated
images (first frame), HEIC/HEIF (pillow-heif), and refuses decompression bombs and
files over the size limit. :func:`read_exif_gps` reads the GPS position, if any.
"""

from __future__ import annotations

import io
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

log = logging.getLogger(__name__)

MAX_FILE_BYTES = 25 * 2**20
"""Largest file accepted (25 MB), the app's upload limit too."""
MAX_PIXELS = 64_000_000
"""Largest image accepted (64 megapixels); bigger ones are refused as possible bombs."""
MIN_SIDE = 8
"""Smaller images carry nothing to locate."""
SUPPORTED = "JPEG, PNG, WebP, HEIC/HEIF, TIFF, BMP or GIF"

_heif_registered = False


class ImageError(ValueError):
    """A file that is not a photo we can use; str() is a plain message."""


def _register_heif() -> None:
    global _heif_registered
    if not _heif_registered:
        try:
            from pillow_heif import register_heif_opener

            register_heif_opener()
        except ImportError:  # pragma: no cover - pillow-heif is in requirements
            log.warning("pillow-heif is not installed: HEIC/HEIF photos cannot be read")
        _heif_registered = True


def _open(source) -> Image.Image:
    _register_heif()
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.exists():
            raise ImageError(f"{path.name}: file not found")
        if path.is_dir():
            raise ImageError(f"{path.name} is a folder, not a photo")
        size = path.stat().st_size
        name = path.name
        data = None
    else:
        data = source if isinstance(source, bytes) else source.read()
        size, name = len(data), "upload"
    if size == 0:
        raise ImageError(f"{name} is empty (0 bytes)")
    if size > MAX_FILE_BYTES:
        raise ImageError(f"{name} is {size / 2**20:.0f} MB; the limit is {MAX_FILE_BYTES // 2**20} MB")
    previous = Image.MAX_IMAGE_PIXELS
    try:
        Image.MAX_IMAGE_PIXELS = MAX_PIXELS
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(path if data is None else io.BytesIO(data))
            if img.width * img.height > MAX_PIXELS:
                raise Image.DecompressionBombError("too many pixels")
            img.load()
        return img
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError(f"{name} is too large to process (over {MAX_PIXELS // 1_000_000} megapixels)") from None
    except UnidentifiedImageError:
        raise ImageError(f"{name} is not an image we can read ({SUPPORTED})") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageError(f"{name} could not be decoded: the file looks damaged or truncated ({exc})") from None
    finally:
        Image.MAX_IMAGE_PIXELS = previous


def to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode -> 8-bit RGB (alpha flattened on white, 16-bit/float rescaled)."""
    if getattr(img, "is_animated", False):
        img.seek(0)
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = np.nanmin(arr), np.nanmax(arr)
        if img.mode.startswith("I;16"):
            lo, hi = 0.0, 65535.0
        arr = np.clip((arr - lo) / max(hi - lo, 1e-12), 0, 1) * 255.0
        img = Image.fromarray(arr.astype(np.uint8), "L")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    if img.mode == "CMYK":
        # Adobe CMYK JPEGs are stored inverted; PIL's conversion handles both.
        return img.convert("RGB")
    return img.convert("RGB") if img.mode != "RGB" else img


def load_image(source) -> Image.Image:
    """Path, bytes or file object -> upright RGB PIL image (or ImageError)."""
    img = _open(source)
    try:
        img = ImageOps.exif_transpose(img)
    except Exception as exc:  # broken EXIF must not lose the photo
        log.info("ignoring unreadable EXIF orientation: %s", exc)
    img = to_rgb(img)
    if min(img.size) < MIN_SIDE:
        raise ImageError(f"the image is only {img.width}x{img.height} pixels; "
                         f"at least {MIN_SIDE}x{MIN_SIDE} are needed")
    return img


@dataclass(frozen=True)
class GPS:
    lat_deg: float
    lon_deg: float


def _rational(v) -> float:
    try:
        return float(v)
    except (TypeError, ZeroDivisionError, ValueError):
        num, den = v
        return float(num) / float(den)


def read_exif_gps(source) -> GPS | None:
    """The EXIF GPS position of a photo, or None (no tag, or a broken/implausible one)."""
    try:
        img = _open(source)
        exif = img.getexif()
        gps = exif.get_ifd(0x8825)
    except ImageError:
        return None
    except Exception as exc:  # odd EXIF: treat as absent
        log.info("unreadable EXIF GPS: %s", exc)
        return None
    try:
        lat, lon = gps.get(2), gps.get(4)
        if not lat or not lon:
            return None
        lat_deg = sum(_rational(x) / 60 ** i for i, x in enumerate(lat[:3]))
        lon_deg = sum(_rational(x) / 60 ** i for i, x in enumerate(lon[:3]))
        if str(gps.get(1, "N")).strip().upper().startswith("S"):
            lat_deg = -lat_deg
        if str(gps.get(3, "E")).strip().upper().startswith("W"):
            lon_deg = -lon_deg
    except Exception as exc:
        log.info("malformed EXIF GPS: %s", exc)
        return None
    if not (np.isfinite(lat_deg) and np.isfinite(lon_deg)) or abs(lat_deg) > 90 or abs(lon_deg) > 180:
        return None
    if lat_deg == 0 and lon_deg == 0:  # an unset GPS block, not the Gulf of Guinea
        return None
    return GPS(float(lat_deg), float(lon_deg))
