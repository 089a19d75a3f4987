"""Landmark images: exact two-level strokes, the stroke pairs of METHOD.md, sizes, sub-pixel placement."""

from __future__ import annotations

import numpy as np
import pytest

from reenactment.faces.landmark_image import FACE_PAIRS, render_landmark_image, render_landmark_images

# Written from METHOD.md section 3, independently of the module's constants.
EXPECTED_OPEN = [(0, 16), (17, 21), (22, 26), (27, 30), (31, 35)]  # inclusive ranges
EXPECTED_CLOSED = [(36, 41), (42, 47), (48, 59), (60, 67)]


def expected_pairs() -> set[frozenset[int]]:
    pairs = set()
    for lo, hi in EXPECTED_OPEN + EXPECTED_CLOSED:
        pairs |= {frozenset((k, k + 1)) for k in range(lo, hi)}
    pairs |= {frozenset((hi, lo)) for lo, hi in EXPECTED_CLOSED}
    return pairs


def synthetic_face(cx: float = 512.0, cy: float = 560.0, s: float = 1.0) -> np.ndarray:
    """A plausible 70-point face in a 1024 frame: [70, 2] (x, y)."""
    pts = np.zeros((70, 2))
    a = np.linspace(np.pi * 0.95, np.pi * 0.05, 17)
    pts[0:17] = np.c_[cx - 260 * s * np.cos(a), cy - 80 * s + 280 * s * np.sin(a)]
    arch = 20 * s * np.abs(np.linspace(-2, 2, 5))
    pts[17:22] = np.c_[np.linspace(cx - 220 * s, cx - 40 * s, 5), cy - 230 * s + arch]
    pts[22:27] = np.c_[np.linspace(cx + 40 * s, cx + 220 * s, 5), cy - 230 * s + arch]
    pts[27:31] = np.c_[np.full(4, cx), np.linspace(cy - 170 * s, cy - 20 * s, 4)]
    pts[31:36] = np.c_[np.linspace(cx - 50 * s, cx + 50 * s, 5), cy + 10 * s - 10 * s * (2 - arch / (20 * s))]
    for first, ex in ((36, cx - 130 * s), (42, cx + 130 * s)):
        a = np.linspace(np.pi, -np.pi, 7)[:6]
        pts[first : first + 6] = np.c_[ex + 55 * s * np.cos(a), cy - 150 * s + 22 * s * np.sin(a)]
    a = np.linspace(np.pi, -np.pi, 13)[:12]
    pts[48:60] = np.c_[cx + 110 * s * np.cos(a), cy + 110 * s + 45 * s * np.sin(a)]
    a = np.linspace(np.pi, -np.pi, 9)[:8]
    pts[60:68] = np.c_[cx + 80 * s * np.cos(a), cy + 110 * s + 15 * s * np.sin(a)]
    pts[68] = [cx - 130 * s, cy - 150 * s]
    pts[69] = [cx + 130 * s, cy - 150 * s]
    return pts


def only(points: dict[int, tuple[float, float]], n: int = 70) -> np.ndarray:
    """[n, 2] with the given points placed and all others missing."""
    p = np.full((n, 2), np.nan)
    for k, xy in points.items():
        p[k] = xy
    return p


def test_face_image_has_exactly_two_levels() -> None:
    rng = np.random.default_rng(0)
    face = synthetic_face() + rng.uniform(-0.5, 0.5, (70, 2))
    image = render_landmark_image(face)
    assert image.shape == (580, 580, 3) and image.dtype == np.uint8
    assert set(np.unique(image)) == {0, 153}
    assert (image[..., 0] == image[..., 1]).all() and (image[..., 0] == image[..., 2]).all()
    assert 2000 < (image[..., 0] > 0).sum() < 580 * 580 // 10
    other = render_landmark_image(face, size=256, value=255)
    assert other.shape == (256, 256, 3) and set(np.unique(other)) == {0, 255}


def test_module_pairs_match_method() -> None:
    assert {frozenset(p) for p in FACE_PAIRS} == expected_pairs()
    assert len(FACE_PAIRS) == len(expected_pairs()) == 63


def test_strokes_join_exactly_the_method_pairs() -> None:
    expected = expected_pairs()
    far = (50.0, 95.0)
    wrong = []
    for i in range(70):
        for j in range(i + 1, 70):
            points = np.tile(far, (70, 1))
            points[i], points[j] = (20.0, 50.0), (80.0, 50.0)
            image = render_landmark_image(points, size=100, image_size=100, dot_diameter=3)
            if (image[50, 50, 0] > 0) != (frozenset((i, j)) in expected):
                wrong.append((i, j))
    assert not wrong, f"stroked iff expected fails for pairs {wrong}"


@pytest.mark.parametrize("y", [290.0, 290.5, 290.3])
def test_line_width_at_580(y: float) -> None:
    image = render_landmark_image(only({0: (100.0, y), 1: (400.0, y)}), size=580, image_size=580)
    thickness = (image[:, 250, 0] > 0).sum()
    assert abs(thickness - 4) <= 1
    rows = np.flatnonzero(image[:, 250, 0])
    assert (np.diff(rows) == 1).all()


@pytest.mark.parametrize("x", [290.0, 290.5, 290.2])
def test_dot_diameter_at_580(x: float) -> None:
    image = render_landmark_image(only({68: (x, 300.0)}), size=580, image_size=580)
    mask = image[..., 0] > 0
    assert abs(mask[300].sum() - 9) <= 1
    assert abs(mask[:, 290].sum() - 9) <= 1
    assert abs(mask.sum() - np.pi * 4.5**2) < 0.15 * np.pi * 4.5**2


def centre_of_mass(image: np.ndarray) -> np.ndarray:
    rows, cols = np.nonzero(image[..., 0])
    return np.array([cols.mean(), rows.mean()])


def test_sub_pixel_positions() -> None:
    base = centre_of_mass(render_landmark_image(only({68: (200.0, 300.0)}), image_size=580))
    half = centre_of_mass(render_landmark_image(only({68: (200.5, 300.0)}), image_size=580))
    np.testing.assert_allclose(base, [200.0, 300.0], atol=1e-9)
    np.testing.assert_allclose(half - base, [0.5, 0.0], atol=0.05)
    # a horizontal segment moved down by half a pixel moves by half a pixel
    line = centre_of_mass(render_landmark_image(only({0: (100.0, 300.0), 1: (400.0, 300.0)}), image_size=580))
    line_half = centre_of_mass(render_landmark_image(only({0: (100.0, 300.5), 1: (400.0, 300.5)}), image_size=580))
    assert abs((line_half - line)[1] - 0.5) < 0.05
    # the frame scaling keeps pixel centres: 1024 -> 580 maps x to (x + 0.5) * 580 / 1024 - 0.5
    rng = np.random.default_rng(1)
    for x, y in rng.uniform(100, 900, (5, 2)):
        com = centre_of_mass(render_landmark_image(only({69: (x, y)}), size=580, image_size=1024))
        np.testing.assert_allclose(com, (np.array([x, y]) + 0.5) * 580 / 1024 - 0.5, atol=0.15)


def test_missing_points_are_skipped() -> None:
    chain = {0: (20.0, 50.0), 1: (50.0, 50.0), 2: (80.0, 50.0)}
    full = render_landmark_image(only(chain), size=100, image_size=100)
    assert full[50, 35, 0] and full[50, 65, 0]
    del chain[1]
    gap = render_landmark_image(only(chain), size=100, image_size=100)
    assert not gap[50, 35:66].any()
    assert gap[50, 20, 0] and gap[50, 80, 0]
    assert not render_landmark_image(np.full((70, 2), np.nan)).any()

    face = synthetic_face()
    face[np.random.default_rng(2).choice(70, 10, replace=False)] = np.nan
    face[3, 0] = np.inf
    image = render_landmark_image(face)
    assert set(np.unique(image)) == {0, 153}


def test_points_far_off_canvas() -> None:
    face = synthetic_face()
    face[:5] += [-3000.0, 0.0]
    face[10] = [1e12, -1e12]
    image = render_landmark_image(face)
    assert set(np.unique(image)) == {0, 153}
    assert not render_landmark_image(np.full((70, 2), 1e9)).any()


def test_68_points_have_no_pupils() -> None:
    face = synthetic_face()
    no_pupils = face.copy()
    no_pupils[68:] = np.nan
    image68 = render_landmark_image(face[:68])
    np.testing.assert_array_equal(image68, render_landmark_image(no_pupils))
    assert (render_landmark_image(face) != image68).any()


def test_batch_matches_single_and_is_deterministic() -> None:
    rng = np.random.default_rng(3)
    batch = synthetic_face()[None] + rng.normal(0, 3, (3, 70, 2))
    images = render_landmark_images(batch, size=200)
    assert images.shape == (3, 200, 200, 3) and images.dtype == np.uint8
    for image, points in zip(images, batch):
        np.testing.assert_array_equal(image, render_landmark_image(points, size=200))
    np.testing.assert_array_equal(images, render_landmark_images(batch, size=200))


def test_bad_shapes_are_refused() -> None:
    with pytest.raises(ValueError):
        render_landmark_image(np.zeros((69, 2)))
    with pytest.raises(ValueError):
        render_landmark_image(np.zeros((70, 3)))
    with pytest.raises(ValueError):
        render_landmark_images(np.zeros((70, 2)))
