"""Landmark images: the 70-point OpenPose face drawn as grey strokes on black (METHOD.md section 3).

Layout of the 70 points: the 68 iBUG points (jaw 0-16, brows 17-21 and 22-26, nose bridge 27-30,
nostrils 31-35, eyes 36-41 and 42-47, outer lip 48-59, inner lip 60-67) plus the pupils 68 and 69.
Strokes join consecutive points of the open chains and of the closed loops (each loop also joins its
last point to its first); every point gets a filled dot; the pupils are dots only.

Rasterisation is our own, in numpy, with exact sub-pixel geometry and no anti-aliasing: a pixel is
stroked when its centre lies within ``line_width / 2`` of a segment or within ``dot_diameter / 2`` of a
point. Pillow's ImageDraw is not used because it rounds every coordinate to whole pixels (its ellipses
and wide lines move in one-pixel steps), which would throw away the sub-pixel motion of the landmarks.
The image therefore holds exactly two values: 0 (background) and ``value`` (strokes). The test is
closed (a centre at exactly the radius is inside), so a 4-px horizontal stroke covers 5 rows when centred
on a pixel row and 4 when centred between rows; averaged over sub-pixel positions it is 4 wide.

Coordinates follow the pixel-centre convention: point (x, y) is the centre of pixel column x, row y, so
pixel (c, r) covers [c - 0.5, c + 0.5] x [r - 0.5, r + 0.5].
"""

from __future__ import annotations

import numpy as np

NUM_POINTS = 70
"""Points in the OpenPose face model: 68 iBUG points plus two pupils."""

OPEN_CHAINS: tuple[tuple[int, ...], ...] = (
    tuple(range(0, 17)),  # jaw
    tuple(range(17, 22)),  # right brow (subject's right, image left)
    tuple(range(22, 27)),  # left brow
    tuple(range(27, 31)),  # nose bridge
    tuple(range(31, 36)),  # nostrils
)
CLOSED_LOOPS: tuple[tuple[int, ...], ...] = (
    tuple(range(36, 42)),  # right eye
    tuple(range(42, 48)),  # left eye
    tuple(range(48, 60)),  # outer lip
    tuple(range(60, 68)),  # inner lip
)
PUPILS: tuple[int, int] = (68, 69)


def _face_pairs() -> tuple[tuple[int, int], ...]:
    pairs = [(c[k], c[k + 1]) for c in OPEN_CHAINS for k in range(len(c) - 1)]
    for loop in CLOSED_LOOPS:
        pairs += [(loop[k], loop[k + 1]) for k in range(len(loop) - 1)]
        pairs.append((loop[-1], loop[0]))
    return tuple(pairs)


FACE_PAIRS: tuple[tuple[int, int], ...] = _face_pairs()
"""The 63 (i, j) index pairs joined by strokes; the pupils appear in none."""

_PAIR_INDEX = np.array(FACE_PAIRS, dtype=np.int64)  # [63, 2]
_MAX_PIECE = 8.0  # segments are cut into pieces of at most this length (px): small boxes, fewer wasted candidates


def default_line_width(size: int) -> int:
    """Stroke width in pixels at output size ``size``: 4 px at 580, scaled, at least 1."""
    return max(1, round(4 * size / 580))


def default_dot_diameter(size: int) -> float:
    """Dot diameter in pixels at output size ``size``: 9 px at 580, scaled."""
    return 9 * size / 580


def render_landmark_image(
    points: np.ndarray,
    size: int = 580,
    image_size: int = 1024,
    line_width: float | None = None,
    dot_diameter: float | None = None,
    value: int = 153,
) -> np.ndarray:
    """Draw one landmark image.

    Args:
        points: [70, 2] or [68, 2] float (x, y) in pixels of an ``image_size`` x ``image_size`` aligned
            frame, pixel-centre convention. With 68 points there are no pupils. Points with a non-finite
            coordinate are missing: no dot, and no stroke touching them.
        size: side of the output image in pixels; coordinates are scaled by ``size / image_size`` about
            the frame's outer edges, i.e. ``x_out = (x + 0.5) * size / image_size - 0.5``.
        image_size: side of the frame the points are given in.
        line_width: stroke width in output pixels; default ``max(1, round(4 * size / 580))``.
        dot_diameter: dot diameter in output pixels; default ``9 * size / 580``.
        value: stroke grey level in 1..255 (153 = white at alpha 0.6).

    Returns:
        [size, size, 3] uint8, 0 everywhere except the strokes, which are exactly ``value`` in all three
        channels.
    """
    image = np.zeros((size, size, 3), dtype=np.uint8)
    _draw(image, points, image_size, line_width, dot_diameter, value)
    return image


def render_landmark_images(
    points_batch: np.ndarray,
    size: int = 580,
    image_size: int = 1024,
    line_width: float | None = None,
    dot_diameter: float | None = None,
    value: int = 153,
) -> np.ndarray:
    """Draw a batch of landmark images: [N, 70, 2] (or [N, 68, 2]) -> [N, size, size, 3] uint8.

    Arguments as in :func:`render_landmark_image`.
    """
    points_batch = np.asarray(points_batch)
    if points_batch.ndim != 3:
        raise ValueError(f"points_batch must be [N, 70, 2] or [N, 68, 2], got shape {points_batch.shape}")
    images = np.zeros((len(points_batch), size, size, 3), dtype=np.uint8)
    for image, points in zip(images, points_batch):
        _draw(image, points, image_size, line_width, dot_diameter, value)
    return images


def _draw(
    image: np.ndarray,
    points: np.ndarray,
    image_size: int,
    line_width: float | None,
    dot_diameter: float | None,
    value: int,
) -> None:
    """Draw the strokes of ``points`` into ``image`` [size, size, 3] uint8, which must be zero."""
    size = image.shape[0]
    points = np.asarray(points, dtype=np.float64)
    if points.shape not in ((NUM_POINTS, 2), (68, 2)):
        raise ValueError(f"points must be [70, 2] or [68, 2] (x, y), got shape {points.shape}")
    if size < 1 or image_size < 1:
        raise ValueError(f"size and image_size must be positive, got {size} and {image_size}")
    if not 1 <= value <= 255:
        raise ValueError(f"value must be in 1..255, got {value}")
    line_width = default_line_width(size) if line_width is None else float(line_width)
    dot_diameter = default_dot_diameter(size) if dot_diameter is None else float(dot_diameter)
    if line_width < 0 or dot_diameter < 0:
        raise ValueError(f"line_width and dot_diameter must be >= 0, got {line_width} and {dot_diameter}")

    p = (points + 0.5) * (size / image_size) - 0.5
    present = np.isfinite(p).all(axis=1)

    dots = p[present]
    i, j = _PAIR_INDEX[:, 0], _PAIR_INDEX[:, 1]
    keep = present[i] & present[j]
    seg_a, seg_b = _clip_segments(p[i[keep]], p[j[keep]], size, line_width / 2)
    seg_a, seg_b = _split_segments(seg_a, seg_b, _MAX_PIECE)

    a = np.concatenate([dots, seg_a])
    b = np.concatenate([dots, seg_b])
    radius = np.concatenate([np.full(len(dots), dot_diameter / 2), np.full(len(seg_a), line_width / 2)])
    # Every channel gets the same value, written once per pixel: no single-channel canvas to replicate.
    _fill_capsules(image.reshape(size * size, -1), size, size, a, b, radius, value)


def _clip_segments(a: np.ndarray, b: np.ndarray, size: int, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """Clip segments [M, 2] to the box of pixel centres grown by ``radius`` (Liang-Barsky); drop the outside.

    Parts of a segment outside that box are farther than ``radius`` from every pixel centre, so clipping
    changes no pixel; it only bounds the work for points far off the canvas.
    """
    lo, hi = -radius - 1.0, size - 1 + radius + 1.0
    d = b - a
    t0 = np.zeros(len(a))
    t1 = np.ones(len(a))
    inside = np.ones(len(a), dtype=bool)
    with np.errstate(divide="ignore", invalid="ignore"):
        for k in range(2):
            moving = d[:, k] != 0
            ta = (lo - a[:, k]) / d[:, k]
            tb = (hi - a[:, k]) / d[:, k]
            t0 = np.where(moving, np.maximum(t0, np.minimum(ta, tb)), t0)
            t1 = np.where(moving, np.minimum(t1, np.maximum(ta, tb)), t1)
            inside &= moving | ((a[:, k] >= lo) & (a[:, k] <= hi))
    inside &= t0 <= t1
    a, d, t0, t1 = a[inside], d[inside], t0[inside, None], t1[inside, None]
    return a + t0 * d, a + t1 * d


def _split_segments(a: np.ndarray, b: np.ndarray, max_length: float) -> tuple[np.ndarray, np.ndarray]:
    """Cut segments [M, 2] into equal pieces no longer than ``max_length``; the union of capsules is unchanged."""
    pieces = np.maximum(1, np.ceil(np.linalg.norm(b - a, axis=1) / max_length)).astype(np.int64)
    owner = np.repeat(np.arange(len(a)), pieces)
    k = np.arange(len(owner)) - np.repeat(np.cumsum(pieces) - pieces, pieces)
    n = pieces[owner][:, None]
    d = (b - a)[owner]
    return a[owner] + d * (k[:, None] / n), a[owner] + d * ((k[:, None] + 1) / n)


def _fill_capsules(
    pixels: np.ndarray, height: int, width: int, a: np.ndarray, b: np.ndarray, radius: np.ndarray, value: int
) -> None:
    """Set ``value`` at every pixel whose centre lies within ``radius`` [M] of segment a-b ([M, 2] each).

    ``pixels`` is the image as [height * width, C], row-major. A dot is the capsule with a == b.
    Vectorised over all capsules: each contributes the pixels of its bounding box as candidates, tested
    against the exact distance (closed: a centre at exactly ``radius`` is inside).
    """
    lo = np.ceil(np.minimum(a, b) - radius[:, None])
    hi = np.floor(np.maximum(a, b) + radius[:, None])
    x0 = np.clip(lo[:, 0], 0, width).astype(np.int64)
    y0 = np.clip(lo[:, 1], 0, height).astype(np.int64)
    box_w = np.clip(hi[:, 0], -1, width - 1).astype(np.int64) - x0 + 1
    box_h = np.clip(hi[:, 1], -1, height - 1).astype(np.int64) - y0 + 1
    count = np.where((box_w > 0) & (box_h > 0), box_w * box_h, 0)
    total = int(count.sum())
    if total == 0:
        return

    # Candidate k belongs to capsule owner[k] and is pixel number local[k] of its box, row-major.
    owner = np.repeat(np.arange(len(a)), count)
    local = np.arange(total) - np.repeat(np.cumsum(count) - count, count)
    box_w = box_w[owner]
    row = local // box_w
    col = local - row * box_w
    flat = (y0 * width + x0)[owner] + row * width + col

    # Offset of the pixel centre from a, its projection parameter t on a-b, and the remaining distance.
    d = b - a
    length2 = (d * d).sum(axis=1)
    inv_length2 = np.divide(1.0, length2, out=np.zeros_like(length2), where=length2 > 0)
    px = (x0 - a[:, 0])[owner] + col
    py = (y0 - a[:, 1])[owner] + row
    dx, dy = d[owner, 0], d[owner, 1]
    t = (px * dx + py * dy) * inv_length2[owner]
    np.clip(t, 0.0, 1.0, out=t)
    px -= t * dx
    py -= t * dy
    hit = px * px + py * py <= (radius * radius)[owner]
    pixels[flat[hit]] = value
