"""FFHQ-style face alignment from landmarks, its inverse, and a crop that stays still over a video.

The crop is FFHQ's: an oriented square from the eye centres and the mouth corners (side = max(2 x eye distance,
1.8 x eye-to-mouth distance), level with the eyes (see ``face_crop``), centred a tenth of the way from the eye midpoint
to the mouth), resampled to ``size`` pixels. Where the square leaves the photo, the missing part is filled like
FFHQ did: mirrored image, blurred and faded towards the median colour with the distance from the border.

Transforms are 3x3 numpy arrays in homogeneous pixel coordinates with the pixel-centre convention (the centre
of the top-left pixel is (0, 0)), mapping original-frame points to aligned-frame points.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.ndimage import gaussian_filter, gaussian_filter1d

from inversion.targets import resize_square
from stylegan3.framing import FFHQ, Framing, get_framing
from stylegan3.images import read_image

from .landmarks import LandmarkDetector, eye_centres


@dataclass(frozen=True)
class Crop:
    """An oriented square in the original frame: ``center`` (x, y) and ``axis``, the vector from the centre to
    the middle of the right edge (its length is half the side; its direction is the face's horizontal)."""

    center: tuple[float, float]
    axis: tuple[float, float]

    @property
    def side(self) -> float:
        return 2.0 * math.hypot(*self.axis)

    def as_array(self) -> np.ndarray:
        return np.array([*self.center, *self.axis], dtype=np.float64)

    @classmethod
    def from_array(cls, a: np.ndarray) -> Crop:
        return cls((float(a[0]), float(a[1])), (float(a[2]), float(a[3])))


def face_crop(points: np.ndarray, tilt: str = "eyes", framing: str | Framing = FFHQ) -> Crop:
    """A generator's oriented crop from landmarks ([>=60, 2] pixels: eyes 36-47 and mouth corners 48, 54).

    Size and centre are FFHQ's, scaled and moved by ``framing`` (``stylegan3.framing``; a generator's
    ``G.framing``: FFHQ's for StyleGAN, DigiFace's tight crop for ``digiface-dcgan-64``).
    ``tilt="ffhq"`` also takes FFHQ's angle, a blend of the eye line and the normal
    of the eye-to-mouth line, which leaves the eyes up to about a degree off level on a lopsided smile
    (1.1 degrees on london_062_smiling); ``tilt="eyes"`` (default) levels the eye line exactly.
    """
    pts = np.asarray(points, dtype=np.float64)
    eye_r, eye_l = eye_centres(pts)
    eye_mid = (eye_r + eye_l) / 2
    eye_to_eye = eye_l - eye_r
    eye_to_mouth = (pts[48] + pts[54]) / 2 - eye_mid
    if tilt == "ffhq":
        x = eye_to_eye - np.array([-eye_to_mouth[1], eye_to_mouth[0]])
    elif tilt == "eyes":
        x = eye_to_eye.copy()
    else:
        raise ValueError(f"tilt must be 'eyes' or 'ffhq', got {tilt!r}")
    framing = get_framing(framing)
    x /= np.hypot(*x)
    x *= max(np.hypot(*eye_to_eye) * 2.0, np.hypot(*eye_to_mouth) * 1.8) * framing.side
    c = eye_mid + eye_to_mouth * framing.centre
    return Crop((float(c[0]), float(c[1])), (float(x[0]), float(x[1])))


def crop_transform(crop: Crop, size: int) -> np.ndarray:
    """3x3 map from original pixel coordinates to those of the ``size`` x ``size`` aligned image."""
    ax, ay = crop.axis
    half = math.hypot(ax, ay)
    scale = size / (2.0 * half)
    cos, sin = ax / half, ay / half
    rot = np.array([[cos, sin], [-sin, cos]])  # rotates the crop's axis onto +x
    m = np.eye(3)
    m[:2, :2] = scale * rot
    m[:2, 2] = size / 2.0 - 0.5 - m[:2, :2] @ np.asarray(crop.center)
    return m


def transform_points(transform: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a 3x3 transform to [..., 2] points (x, y)."""
    pts = np.asarray(points, dtype=np.float64)
    out = pts @ transform[:2, :2].T + transform[:2, 2]
    return out.astype(np.asarray(points).dtype if np.asarray(points).dtype.kind == "f" else np.float64)


def invert_transform(transform: np.ndarray) -> np.ndarray:
    """The aligned-to-original map."""
    return np.linalg.inv(transform)


def _edge_affine(transform: np.ndarray) -> tuple[float, ...]:
    """Pillow's AFFINE data (output -> input, pixel-edge convention) for an input -> output centre-convention map."""
    inv = np.linalg.inv(transform)
    shift = np.eye(3)
    shift[:2, 2] = 0.5
    unshift = np.eye(3)
    unshift[:2, 2] = -0.5
    m = shift @ inv @ unshift
    return tuple(float(v) for v in m[:2].reshape(-1))


def _blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of an HxWxC float image; wide blurs run on a box-reduced copy (same look, a fraction of the
    time) and are resized back."""
    k = int(sigma // 4)
    if k < 2:
        return gaussian_filter(img, sigma=(sigma, sigma, 0), mode="nearest")
    h, w = img.shape[:2]
    small = np.stack([np.asarray(Image.fromarray(img[..., c]).reduce(k)) for c in range(img.shape[2])], axis=-1)
    small = gaussian_filter(small, sigma=(sigma / k, sigma / k, 0), mode="nearest")
    return np.stack(
        [
            np.asarray(Image.fromarray(small[..., c]).resize((w, h), Image.Resampling.BILINEAR))
            for c in range(img.shape[2])
        ],
        axis=-1,
    )


def _pad_like_ffhq(image: np.ndarray, pad: tuple[int, int, int, int], side: float) -> np.ndarray:
    """Mirror-pad (left, top, right, bottom) and hide the seams: blur and fade to the median with the distance
    from the original border, as FFHQ's preparation did."""
    left, top, right, bottom = pad
    img = np.pad(image.astype(np.float32), ((top, bottom), (left, right), (0, 0)), mode="reflect")
    h, w = img.shape[:2]
    ys = np.arange(h, dtype=np.float32)[:, None]
    xs = np.arange(w, dtype=np.float32)[None, :]

    def ratio(dist: np.ndarray, width: int) -> np.ndarray:  # distance from a padded border, in pad widths
        return dist / width if width > 0 else np.full_like(dist, np.inf)

    # 1 at the outer edge of the padding, 0 at the original border, negative inside (blur fades over 1/3 pad).
    mask_x = 1.0 - np.minimum(ratio(xs, left), ratio(w - 1 - xs, right))
    mask_y = 1.0 - np.minimum(ratio(ys, top), ratio(h - 1 - ys, bottom))
    mask = np.maximum(mask_x, mask_y)[..., None]
    blurred = _blur(img, side * 0.02)
    img += (blurred - img) * np.clip(mask * 3.0 + 1.0, 0.0, 1.0)
    img += (np.median(img, axis=(0, 1)) - img) * np.clip(mask, 0.0, 1.0)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def warp_crop(image: np.ndarray, crop: Crop, size: int = 1024, padding: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Resample ``crop`` of an HxWx3 uint8 image to ``size`` x ``size``; returns (aligned, 3x3 transform)."""
    transform = crop_transform(crop, size)
    src = image
    factor = 1
    # Downscaling by more than 2x: box-average first so the final bicubic step does not alias.
    shrink = int(math.floor(crop.side / size))
    if shrink >= 2:
        src = np.asarray(Image.fromarray(src).reduce(shrink))
        factor = shrink
    # Work on the crop's bounding box (plus a margin), mirror-padding where it leaves the frame.
    corners = np.array([[-1, -1], [-1, 1], [1, 1], [1, -1]], dtype=np.float64)
    ax = np.array(crop.axis)
    ay = np.array([-ax[1], ax[0]])
    quad = np.asarray(crop.center) + corners[:, :1] * ax + corners[:, 1:] * ay
    quad = (quad + 0.5) / factor - 0.5
    border = max(int(round(crop.side / factor * 0.1)), 3)
    x0, y0 = np.floor(quad.min(0)).astype(int) - border
    x1, y1 = np.ceil(quad.max(0)).astype(int) + border + 1
    sh, sw = src.shape[:2]
    pad = (max(-x0, 0), max(-y0, 0), max(x1 - sw, 0), max(y1 - sh, 0))
    cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x1, sw), min(y1, sh)
    src = src[cy0:cy1, cx0:cx1]
    offset = np.array([cx0, cy0], dtype=np.float64)
    if padding and max(pad) > 0:
        pad = tuple(max(p, int(round(crop.side / factor * 0.3))) if p > 0 else 0 for p in pad)
        pad = tuple(min(p, s - 1) if p > 0 else 0 for p, s in zip(pad, (src.shape[1], src.shape[0]) * 2))
        src = _pad_like_ffhq(src, pad, crop.side / factor)
        offset -= (pad[0], pad[1])
    # Map: original -> shrunk -> cropped/padded source; compose with the crop transform.
    to_src = np.eye(3)
    to_src[:2, :2] /= factor
    to_src[:2, 2] = (0.5 / factor - 0.5) - offset
    src_to_aligned = transform @ np.linalg.inv(to_src)
    aligned = Image.fromarray(np.ascontiguousarray(src)).transform(
        (size, size), Image.Transform.AFFINE, _edge_affine(src_to_aligned), resample=Image.Resampling.BICUBIC
    )
    return np.asarray(aligned), transform


def align_face(
    image: np.ndarray,
    points: np.ndarray,
    size: int = 1024,
    padding: bool = True,
    tilt: str = "eyes",
    framing: str | Framing = FFHQ,
) -> tuple[np.ndarray, np.ndarray]:
    """Align a face (FFHQ's crop, or ``framing``): HxWx3 uint8 RGB + [>=60, 2] landmarks -> ([size, size, 3] uint8,
    3x3 transform).

    ``transform`` maps original pixel coordinates to aligned ones (``transform_points``); its inverse
    (``invert_transform``) maps back, and ``unalign_image`` warps aligned pixels back into the frame.
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an HxWx3 uint8 RGB image, got {image.dtype} {image.shape}")
    return warp_crop(image, face_crop(points, tilt, framing), size=size, padding=padding)


def unalign_image(
    aligned: np.ndarray, transform: np.ndarray, frame_shape: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Warp an aligned image back into an original frame of (height, width).

    Returns (image [H, W, 3] uint8, coverage [H, W] float32 in [0, 1]: 1 where the aligned square covers the pixel).
    """
    h, w = frame_shape
    size = aligned.shape[0]
    inverse = np.linalg.inv(transform)
    data = _edge_affine(inverse)
    warped = Image.fromarray(aligned).transform((w, h), Image.Transform.AFFINE, data, resample=Image.Resampling.BICUBIC)
    ones = Image.fromarray(np.full((size, size), 255, np.uint8))
    cover = ones.transform((w, h), Image.Transform.AFFINE, data, resample=Image.Resampling.BILINEAR)
    return np.asarray(warped), np.asarray(cover, dtype=np.float32) / 255.0


def stabilize_crops(crops: np.ndarray, fps: float, sigma_s: float = 0.3, mode: str = "smooth") -> np.ndarray:
    """Steady crops for a video: [T, 4] per-frame crops (``Crop.as_array``) -> [T, 4].

    ``mode="smooth"`` low-passes centre, size and angle over time with a Gaussian of ``sigma_s`` seconds (no
    lag: the whole track is known); ``"fixed"`` uses one crop (the per-parameter median) for the whole clip;
    ``"none"`` returns the crops unchanged. Rows that are NaN (no face) are filled from their neighbours.
    """
    crops = np.asarray(crops, dtype=np.float64)
    if mode == "none":
        return crops.copy()
    valid = np.isfinite(crops).all(axis=1)
    if not valid.any():
        raise ValueError("no frame has a face: cannot place a crop")
    t = np.arange(len(crops))
    centre = np.stack([np.interp(t, t[valid], crops[valid, i]) for i in (0, 1)], axis=1)
    half = np.interp(t, t[valid], np.log(np.hypot(crops[valid, 2], crops[valid, 3])))
    angle = np.interp(t, t[valid], np.unwrap(np.arctan2(crops[valid, 3], crops[valid, 2])))
    if mode == "fixed":
        centre[:] = np.median(centre[valid], axis=0)
        half[:] = np.median(half[valid])
        angle[:] = np.median(angle[valid])
    elif mode == "smooth":
        sigma = max(sigma_s * fps, 1e-6)
        centre = gaussian_filter1d(centre, sigma, axis=0, mode="nearest")
        half = gaussian_filter1d(half, sigma, mode="nearest")
        angle = gaussian_filter1d(angle, sigma, mode="nearest")
    else:
        raise ValueError(f"unknown crop stabilisation mode {mode!r}: use 'smooth', 'fixed' or 'none'")
    length = np.exp(half)
    return np.stack([centre[:, 0], centre[:, 1], length * np.cos(angle), length * np.sin(angle)], axis=1)


def load_target(
    path: str | Path,
    resolution: int,
    align: bool = True,
    backend: str = "dlib",
    face: str | int = "largest",
    report: Callable[[str], None] | None = None,
    framing: str | Framing = FFHQ,
) -> np.ndarray:
    """A photo as a resolution x resolution uint8 target: aligned from its landmarks (with the generator's
    ``framing``) when ``align``
    (``NoFaceError`` if there is no face), else only resized (it must then be square and already aligned).

    ``face``: which face of several ("largest", or an index, 0 = the largest); ``report`` gets the one-line note
    saying which face was taken of how many, when there are several."""
    if not align:
        return resize_square(read_image(path), resolution)
    image, points, note = LandmarkDetector(backend).read_face(path, face)
    if note and report:
        report(note)
    aligned, _ = align_face(image, points, size=resolution, framing=framing)
    return aligned
