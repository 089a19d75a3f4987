"""read_image / write_image: accepted modes, EXIF orientation, refusals that name the file."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from stylegan3.images import ImageReadError, read_image, write_image

SAMPLES = Path(__file__).resolve().parents[1].parent / "shared" / "samples"
PORTRAIT_JPEG = SAMPLES / "images" / "lisa3_tilted.jpg"  # 600x800 (WxH), no EXIF orientation
GRID_PNG = SAMPLES / "images" / "grid_lbax4n_frame030_glasses.png"


def write_png16_rgb(path: Path, rgb: np.ndarray) -> None:
    """A 16-bit-per-channel RGB PNG written chunk by chunk (Pillow cannot save one)."""
    height, width, _ = rgb.shape
    rows = b"".join(b"\x00" + rgb[y].astype(">u2").tobytes() for y in range(height))  # filter 0 per row

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)  # 16 bits, colour type 2 (RGB)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")
    )


def test_rgb_png_sample():
    image = read_image(GRID_PNG)
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    assert np.array_equal(image, np.asarray(Image.open(GRID_PNG).convert("RGB")))


def test_rgba_is_composited_over_white(tmp_path):
    rgba = np.zeros((2, 3, 4), np.uint8)
    rgba[..., :3] = (200, 0, 0)
    rgba[..., 3] = [[0, 255, 128], [0, 0, 0]]
    path = tmp_path / "rgba.png"
    Image.fromarray(rgba).save(path)
    image = read_image(path)
    assert image.shape == (2, 3, 3)
    assert tuple(image[0, 0]) == (255, 255, 255)  # transparent -> white
    assert tuple(image[0, 1]) == (200, 0, 0)  # opaque -> itself
    assert np.allclose(image[0, 2], (227, 127, 127), atol=1)  # half -> blend


@pytest.mark.parametrize("mode", ["L", "1", "LA"])
def test_greyscale_is_replicated(mode, tmp_path):
    grey = np.array([[0, 255], [255, 0]], np.uint8)
    path = tmp_path / f"grey_{mode}.png"
    Image.fromarray(grey).convert(mode).save(path)
    image = read_image(path)
    assert image.shape == (2, 2, 3)
    assert np.array_equal(image, np.repeat(grey[:, :, None], 3, axis=2))


def test_16bit_greyscale_is_scaled_not_clipped(tmp_path):
    values = np.array([[0, 1000, 257 * 10, 32896, 65535]], np.uint16)
    path = tmp_path / "grey16.png"
    Image.fromarray(values).save(path)
    assert Image.open(path).mode.startswith("I")
    image = read_image(path)
    assert np.array_equal(image[..., 0], [[0, 4, 10, 128, 255]]) and np.array_equal(image[..., 0], image[..., 2])


def test_16bit_rgb_png(tmp_path):
    rgb = (np.arange(4 * 5 * 3).reshape(4, 5, 3) * 1000 + 300).astype(np.uint16)
    path = tmp_path / "rgb16.png"
    write_png16_rgb(path, rgb)
    assert np.array_equal(read_image(path), (rgb >> 8).astype(np.uint8))  # Pillow keeps the high byte


@pytest.mark.parametrize("transparent", [False, True])
def test_palette_png(transparent, tmp_path):
    palette_image = Image.new("P", (2, 1))
    palette_image.putpalette([10, 20, 30, 40, 50, 60] + [0] * 762)
    palette_image.putdata([0, 1])
    path = tmp_path / "palette.png"
    palette_image.save(path, **({"transparency": 1} if transparent else {}))
    image = read_image(path)
    assert tuple(image[0, 0]) == (10, 20, 30)
    assert tuple(image[0, 1]) == ((255, 255, 255) if transparent else (40, 50, 60))


def test_cmyk_jpeg_is_converted(tmp_path):
    path = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(path, quality=95)  # pure red in CMYK
    image = read_image(path)
    assert image.shape == (8, 8, 3) and np.allclose(image.mean(axis=(0, 1)), (255, 0, 0), atol=6)


def test_exif_orientation_is_applied(tmp_path):
    stored = Image.open(PORTRAIT_JPEG).convert("RGB").resize((150, 200))  # 150 wide, 200 high
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: the stored picture must be turned 90 degrees clockwise to view
    path = tmp_path / "rotated.jpg"
    stored.save(path, quality=95, exif=exif.tobytes())
    image = read_image(path)
    assert image.shape == (150, 200, 3)
    reference = np.rot90(np.asarray(stored), -1)  # clockwise
    assert np.abs(image.astype(np.int16) - reference).mean() < 3


def test_write_image_roundtrip_is_atomic(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (12, 20, 3), dtype=np.uint8)
    png, jpeg = tmp_path / "a" / "b" / "out.png", tmp_path / "out.jpeg"
    write_image(png, rgb)
    write_image(jpeg, np.full((16, 16, 3), 90, np.uint8), quality=90)
    assert np.array_equal(read_image(png), rgb)
    assert np.abs(read_image(jpeg).astype(np.int16) - 90).max() <= 2
    assert [p.name for p in png.parent.iterdir()] == ["out.png"]
    with pytest.raises(ValueError, match="suffix"):
        write_image(tmp_path / "out.bmp", rgb)
    with pytest.raises(ValueError, match="HxWx3"):
        write_image(tmp_path / "bad.png", rgb[..., 0])
    assert not (tmp_path / "bad.png").exists() and not list(tmp_path.glob(".bad.png*"))


def make_bad_file(case: str, tmp_path: Path) -> Path:
    if case == "missing":
        return tmp_path / "missing.png"
    if case == "empty":
        path = tmp_path / "empty.jpg"
        path.write_bytes(b"")
    elif case == "text":
        path = tmp_path / "text.png"
        path.write_text("not an image\n")
    elif case == "truncated-jpeg":
        path = tmp_path / "truncated.jpg"
        data = PORTRAIT_JPEG.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif case == "truncated-png":
        path = tmp_path / "truncated.png"
        data = GRID_PNG.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    return path


@pytest.mark.parametrize("case", ["missing", "empty", "text", "truncated-jpeg", "truncated-png"])
def test_unreadable_files_raise_with_file_name(case, tmp_path):
    path = make_bad_file(case, tmp_path)
    with pytest.raises(ImageReadError, match=path.name) as raised:
        read_image(path)
    assert "\n" not in str(raised.value)


def test_float_tiff_is_refused_with_its_mode(tmp_path):
    path = tmp_path / "float.tiff"
    Image.fromarray(np.ones((4, 4), np.float32)).save(path)
    with pytest.raises(ImageReadError, match=r"float\.tiff.*mode F"):
        read_image(path)


def test_animation_is_refused(tmp_path):
    path = tmp_path / "anim.gif"
    frames = [Image.new("RGB", (4, 4), colour) for colour in ((255, 0, 0), (0, 255, 0))]
    frames[0].save(path, save_all=True, append_images=frames[1:])
    with pytest.raises(ImageReadError, match=r"anim\.gif.*2 frames"):
        read_image(path)
