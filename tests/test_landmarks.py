"""Landmark backends on real faces: every sample face is found, the two backends agree, errors are clear."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import GRID_CLIPS, LONDON, SAMPLES, detector, grid_track

from reenactment.faces.landmarks import (
    MEDIAPIPE_TO_IBUG,
    LandmarkDetector,
    MultipleFacesError,
    NoFaceError,
    inter_ocular_distance,
)
from stylegan3.images import read_image

BACKENDS = ["dlib", "mediapipe"]


def backend_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Mean distance between two backends' 68 iBUG points, as a fraction of the inter-ocular distance."""
    iod = (inter_ocular_distance(a) + inter_ocular_distance(b)) / 2
    return float((np.linalg.norm(a[..., :68, :] - b[..., :68, :], axis=-1).mean(-1) / iod).mean())


@pytest.mark.parametrize("backend", BACKENDS)
def test_london_faces_found(backend):
    det = detector(backend)
    for name in LONDON:
        image = read_image(SAMPLES / "images" / name)
        pts = det(image, name=name)
        assert pts.shape == (70, 2) and pts.dtype == np.float32
        assert np.isfinite(pts).all()
        h, w = image.shape[:2]
        assert (pts >= 0).all() and (pts[:, 0] < w).all() and (pts[:, 1] < h).all()
        # Anatomy: subject's right eye on the image left, pupils inside their eye's contour box, mouth below nose.
        assert pts[36:42, 0].mean() < pts[42:48, 0].mean()
        for pupil, eye in ((68, slice(36, 42)), (69, slice(42, 48))):
            assert pts[eye, 0].min() <= pts[pupil, 0] <= pts[eye, 0].max()
        assert pts[48:68, 1].mean() > pts[30, 1] > pts[27, 1]


def test_backends_agree_on_london_and_grid(capsys):
    london = []
    for name in LONDON:
        image = read_image(SAMPLES / "images" / name)
        london.append(backend_distance(detector("dlib")(image), detector("mediapipe")(image)))
    grid = {clip: backend_distance(grid_track(clip, "dlib"), grid_track(clip, "mediapipe")) for clip in GRID_CLIPS}
    with capsys.disabled():
        print(
            f"\nmean dlib-mediapipe distance / IOD: London {np.mean(london):.4f} (max {np.max(london):.4f}); GRID "
            + ", ".join(f"{k} {v:.4f}" for k, v in grid.items())
        )
    # The mapping table was fitted on the photos; the GRID frames are held out.
    assert np.mean(london) < 0.06 and max(grid.values()) < 0.08


def test_every_grid_frame_has_landmarks_with_both_backends():
    for clip in GRID_CLIPS:
        for backend in BACKENDS:
            track = grid_track(clip, backend)  # raises NoFaceError naming the frame on a miss
            assert track.shape == (75, 70, 2) and np.isfinite(track).all()


def test_mediapipe_table_is_well_formed():
    assert len(MEDIAPIPE_TO_IBUG) == 68
    assert all(0 <= a <= b < 468 for a, b in MEDIAPIPE_TO_IBUG)


def test_no_face_error_names_the_input(tmp_path):
    path = tmp_path / "wall.png"
    rng = np.random.default_rng(0)
    from PIL import Image

    Image.fromarray(rng.integers(90, 110, (240, 320, 3), dtype=np.uint8)).save(path)
    for backend in BACKENDS:
        with pytest.raises(NoFaceError, match="wall.png"):
            detector(backend).read(path)


def test_several_faces_largest_first_and_selectable():
    big = read_image(SAMPLES / "images" / "london_003_neutral.jpg")
    small = read_image(SAMPLES / "images" / "london_087_neutral.jpg")[::3, ::3]
    canvas = np.full((1350, 1350 + small.shape[1], 3), 128, np.uint8)
    canvas[:, :1350] = big
    canvas[: small.shape[0], 1350:] = small
    det = detector("dlib")
    faces = det.detect_all(canvas)
    assert len(faces) == 2 and faces[0].area > faces[1].area
    np.testing.assert_array_equal(det(canvas), faces[0].points)
    assert det(canvas, face=1)[:, 0].min() > 1350  # the small face on the right
    with pytest.raises(NoFaceError, match="only 2"):
        det(canvas, face=2)
    with pytest.raises(MultipleFacesError, match="2 faces"):
        LandmarkDetector("dlib", on_multiple="error")(canvas)


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown landmark backend"):
        LandmarkDetector("openpose")
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        detector("dlib")(np.zeros((10, 10), np.uint8))
