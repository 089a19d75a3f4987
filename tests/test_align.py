"""FFHQ alignment: level eyes, landmarks that survive the warp, an exact inverse, a steady video crop."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import LONDON, SAMPLES, detector, grid_frames, grid_track

from reenactment.faces.align import (
    Crop,
    align_face,
    crop_transform,
    face_crop,
    invert_transform,
    stabilize_crops,
    transform_points,
    unalign_image,
    warp_crop,
)
from reenactment.faces.landmarks import eye_centres, inter_ocular_distance
from stylegan3.images import read_image


@pytest.fixture(scope="module")
def london_aligned():
    det = detector("dlib")
    out = {}
    for name in LONDON:
        image = read_image(SAMPLES / "images" / name)
        pts = det(image, name=name)
        aligned, transform = align_face(image, pts, size=1024)
        out[name] = (image, pts, aligned, transform)
    return out


def test_eye_line_level_and_inverse(london_aligned):
    for name, (_, pts, aligned, transform) in london_aligned.items():
        assert aligned.shape == (1024, 1024, 3) and aligned.dtype == np.uint8
        assert transform.shape == (3, 3)
        carried = transform_points(transform, pts)
        right, left = eye_centres(carried)
        angle = np.degrees(np.arctan2(left[1] - right[1], left[0] - right[0]))
        assert abs(angle) < 1.0, name
        back = transform_points(invert_transform(transform), carried)
        assert np.abs(back - pts).max() < 0.5, name


@pytest.mark.parametrize("backend", ["dlib", "mediapipe"])
def test_fresh_landmarks_on_aligned_match_carried(london_aligned, backend, capsys):
    errors = {}
    for name, (_, pts_dlib, aligned, transform) in london_aligned.items():
        image = london_aligned[name][0]
        pts = pts_dlib if backend == "dlib" else detector(backend)(image)
        carried = transform_points(transform, pts)
        fresh = detector(backend)(aligned)
        errors[name] = float(np.linalg.norm(fresh[:68] - carried[:68], axis=1).mean() / inter_ocular_distance(carried))
    with capsys.disabled():
        print(f"\n{backend} fresh-vs-carried / IOD: " + ", ".join(f"{k[7:-4]} {v:.4f}" for k, v in errors.items()))
    assert np.mean(list(errors.values())) < 0.03


def test_pixels_land_where_points_go():
    # A small bright blob's centre of mass lands where the transform sends its centre (sub-pixel).
    pts = grid_track("grid_lbax4n", "dlib")[30]
    h, w = 288, 360
    centre = np.array([180.3, 150.7])
    yy, xx = np.mgrid[:h, :w]
    blob = np.exp(-((xx - centre[0]) ** 2 + (yy - centre[1]) ** 2) / (2 * 2.0**2))
    image = np.zeros((h, w, 3), np.uint8)
    image[..., 0] = np.rint(blob * 255)
    aligned, transform = align_face(image, pts, size=512, padding=False)
    m = aligned[..., 0].astype(np.float64)
    ys, xs = np.mgrid[:512, :512]
    got = np.array([(m * xs).sum() / m.sum(), (m * ys).sum() / m.sum()])
    np.testing.assert_allclose(got, transform_points(transform, centre), atol=0.1)


def test_downscaled_crop_and_padding():
    image = read_image(SAMPLES / "images" / "zoom_15cm_closeup.jpg")  # face fills the frame: crop leaves it
    pts = detector("dlib")(image)
    crop = face_crop(pts)
    aligned, transform = warp_crop(image, crop, size=256)
    assert aligned.shape == (256, 256, 3)
    # Where the crop leaves the photo, FFHQ-style padding fills it (no black corners).
    corners = transform_points(transform, np.array([[0, 0], [image.shape[1] - 1, image.shape[0] - 1]]))
    assert corners[0].min() > 0 or corners[1].max() < 255
    assert aligned[:8, :8].mean() > 20 and aligned[-8:, -8:].mean() > 20
    unpadded, _ = warp_crop(image, crop, size=256, padding=False)
    outside = (transform_points(invert_transform(transform), np.array([[0.0, 0.0]])) < 0).any()
    assert outside and unpadded[0, 0].max() == 0


def test_unalign_image_round_trip(london_aligned):
    image, _, aligned, transform = london_aligned[LONDON[0]]
    back, cover = unalign_image(aligned, transform, image.shape[:2])
    assert back.shape == image.shape and cover.shape == image.shape[:2]
    inside = cover > 0.999
    assert 0.1 < inside.mean() < 0.9
    # Resampled twice, the face region still matches the photo closely.
    diff = np.abs(back.astype(float) - image.astype(float))[inside].mean()
    assert diff < 6.0


def test_crop_transform_geometry():
    crop = Crop(center=(100.0, 50.0), axis=(30.0, 40.0))  # side 100, tilted
    m = crop_transform(crop, 200)
    np.testing.assert_allclose(transform_points(m, np.array([100.0, 50.0])), [99.5, 99.5])
    np.testing.assert_allclose(transform_points(m, np.array([130.0, 90.0])), [199.5, 99.5])  # right-edge middle


def test_stabilised_video_crop_is_steady():
    track = grid_track("grid_lrwp9a", "dlib")
    crops = np.stack([face_crop(p).as_array() for p in track])
    steady = stabilize_crops(crops, fps=25.0, sigma_s=0.3, mode="smooth")
    fixed = stabilize_crops(crops, fps=25.0, mode="fixed")
    side = 2 * np.hypot(crops[:, 2], crops[:, 3]).mean()

    def shake(c):  # frame-to-frame second difference of the crop centre, relative to the crop side
        return np.linalg.norm(np.diff(c[:, :2], 2, axis=0), axis=1).mean() / side

    assert shake(steady) < shake(crops) / 5
    assert np.ptp(fixed, axis=0).max() == 0
    # The steady crop still follows the face: the eyes stay near their FFHQ place in every frame.
    frames = grid_frames("grid_lrwp9a")
    for t in (0, 37, 74):
        _, transform = warp_crop(frames[t], Crop.from_array(steady[t]), size=256)
        right, left = eye_centres(transform_points(transform, track[t]))
        assert np.abs((right + left) / 2 - [127.5, 120.0]).max() < 256 * 0.05
    with pytest.raises(ValueError, match="mode"):
        stabilize_crops(crops, 25.0, mode="wobbly")
