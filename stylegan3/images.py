"""Read and write still images as HxWx3 uint8 RGB arrays (Pillow), with errors that name the file."""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .io import AtomicFile

# Modes accepted as they are or after a lossless conversion to 8-bit RGB.
_GREY_MODES = {"1", "L"}
_ALPHA_MODES = {"RGBA", "RGBa", "LA", "La", "PA"}
_GREY16_MODES = {"I;16", "I;16L", "I;16B", "I;16N", "I"}
# The one list of image files the tools take as input (read_image reads them all); written are PNG and JPEG only.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
_WRITE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG"}
WRITE_SUFFIXES = tuple(_WRITE_FORMATS)


class ImageReadError(ValueError):
    """An image file that is missing, empty, damaged or in an unsupported mode; the message names the file."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = Path(path)
        self.reason = " ".join(str(reason).split())  # one line, whatever the decoder said
        super().__init__(f"cannot read image '{self.path}': {self.reason}")


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as HxWx3 uint8 RGB, upright according to its EXIF orientation.

    Accepted: RGB; greyscale ``1``/``L`` (replicated to 3 channels); 16-bit greyscale (``I;16*``, ``I`` with
    values in 0..65535; scaled to 8 bits by rounding v/257, so 65535 -> 255); 16-bit RGB PNG (Pillow itself
    keeps the high byte); CMYK (converted); palette images. Transparency (RGBA, LA, PA, palettes with a
    transparent entry) is composited over white, so a cut-out face lands on a plain light background rather
    than on whatever colour the transparent pixels happen to hold. A multi-frame file (animated GIF/PNG,
    multi-page TIFF) is refused, except MPO (camera JPEGs with an embedded preview), of which the primary
    image is read. Anything else (e.g. mode ``F`` float, ``LAB``, ``HSV``) raises ImageReadError naming the mode.

    Raises ImageReadError for a missing, empty, unreadable or truncated file (truncation is detected as long
    as Pillow's global ``ImageFile.LOAD_TRUNCATED_IMAGES`` keeps its default, False).
    """
    path = Path(path)
    if not path.exists():
        raise ImageReadError(path, "no such file")
    if not path.is_file():
        raise ImageReadError(path, "not a regular file")
    if path.stat().st_size == 0:
        raise ImageReadError(path, "file is empty (0 bytes)")
    try:
        with Image.open(path) as image:
            frames = getattr(image, "n_frames", 1)
            if frames > 1 and image.format != "MPO":
                raise ImageReadError(path, f"{image.format} file has {frames} frames; expected a single image")
            image.load()  # decode now, so a truncated file fails here and not later
            image = ImageOps.exif_transpose(image)
    except ImageReadError:
        raise
    except UnidentifiedImageError as error:
        raise ImageReadError(path, "not an image format Pillow recognises") from error
    except Image.DecompressionBombError as error:
        raise ImageReadError(path, f"image too large ({error})") from error
    except (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error) as error:
        reason = str(error) or type(error).__name__
        raise ImageReadError(path, f"not a readable image ({reason})") from error
    return _to_rgb8(image, path)


def _to_rgb8(image: Image.Image, path: Path) -> np.ndarray:
    """Convert a loaded Pillow image of an accepted mode to HxWx3 uint8 RGB."""
    mode = image.mode
    if mode == "P" and "transparency" in image.info:
        image, mode = image.convert("RGBA"), "RGBA"
    if mode in _ALPHA_MODES:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(white, rgba).convert("RGB"))
    if mode in ("RGB", "P", "CMYK") or mode in _GREY_MODES:
        return np.asarray(image.convert("RGB"))
    if mode in _GREY16_MODES:
        values = np.asarray(image).astype(np.int64)
        if values.min(initial=0) < 0 or values.max(initial=0) > 65535:
            raise ImageReadError(path, f"mode {mode} with values outside 0..65535 is not supported")
        grey = ((values * 255 + 32767) // 65535).astype(np.uint8)  # round(v / 257): the inverse of v8 * 257
        return np.repeat(grey[:, :, None], 3, axis=2)
    raise ImageReadError(path, f"unsupported image mode {mode}; expected RGB, RGBA, greyscale, 16-bit or CMYK")


def write_image(path: str | os.PathLike, image: np.ndarray, quality: int = 95, png_compression: int = 1) -> None:
    """Write an HxWx3 uint8 RGB array as PNG or JPEG (chosen by suffix), atomically, creating parent folders.

    ``quality`` (1..95) applies to JPEG only; ``png_compression`` (0..9) to PNG only: zlib level 1 writes a
    1024 px frame about 4x faster than Pillow's default 6, for files about 25% larger. The image is first
    written to a hidden temporary file in the same folder and then renamed, so the final name never holds a
    half-written file.
    """
    path = Path(path)
    image_format = _WRITE_FORMATS.get(path.suffix.lower())
    if image_format is None:
        raise ValueError(f"{path}: unsupported image suffix {path.suffix!r}; use one of {sorted(_WRITE_FORMATS)}")
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"{path}: expected an HxWx3 uint8 RGB array, got shape {image.shape} {image.dtype}")
    options = {"quality": quality} if image_format == "JPEG" else {"compress_level": png_compression}
    with AtomicFile(path) as file, open(file.tmp, "wb") as stream:
        Image.fromarray(image).save(stream, format=image_format, **options)


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(width, height) of an image file as ``read_image`` returns it (EXIF rotation applied), from its header only.

    Cheap enough to check a whole folder before a long run; raises ImageReadError for a missing, empty or
    unrecognised file (damage further in is found only when the pixels are decoded, by ``read_image``).
    """
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(path, "no such file" if not path.exists() else "not a regular file")
    if path.stat().st_size == 0:
        raise ImageReadError(path, "file is empty (0 bytes)")
    try:
        with Image.open(path) as image:
            width, height = image.size
            orientation = image.getexif().get(0x0112, 1)
    except UnidentifiedImageError as error:
        raise ImageReadError(path, "not an image format Pillow recognises") from error
    except (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error) as error:
        raise ImageReadError(path, f"not a readable image ({str(error) or type(error).__name__})") from error
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)  # 5-8: rotated by 90 degrees
