"""Cross-identity motion transfer (issue 11): a London photo as source, GRID clips of other people as driving."""

from __future__ import annotations

from functools import cache

import numpy as np
import pytest
from conftest import GRID_CLIPS, SAMPLES, detector
from scipy.spatial import procrustes

from reenactment.data.prepare import mouth_openness
from reenactment.faces.align import crop_transform, face_crop, transform_points
from reenactment.faces.motion import LIPS, STABLE, expression_distance, reference_frame, transfer_motion
from reenactment.pipeline import DrivingOptions, track_driving

SIZE = 1024  # the generator's aligned frame
SHAPE = (*range(17), *range(36, 48))  # jaw and eye contours: the face's shape, mouth excluded


@cache
def source_points(name: str = "london_003_neutral.jpg") -> np.ndarray:
    """[70, 2] landmarks of a London photo in its aligned frame (as ``prepare_source`` computes them)."""
    _, points = detector("dlib").read(SAMPLES / "images" / name)
    return transform_points(crop_transform(face_crop(points), SIZE), points.astype(np.float64))


@cache
def driving_points(clip: str) -> np.ndarray:
    """[75, 70, 2] driving landmarks of a GRID clip in its aligned frame, tracked as ``reenact.py`` does."""
    track = track_driving(SAMPLES / "videos" / f"{clip}.mpg", detector("dlib"), SIZE, DrivingOptions())
    return track.points.astype(np.float64)


def eye_angle(points: np.ndarray) -> np.ndarray:
    """Angle (radians) of the line between the eye-contour centres, [..., 70, 2] -> [...]."""
    d = points[..., 42:48, :].mean(-2) - points[..., 36:42, :].mean(-2)
    return np.arctan2(d[..., 1], d[..., 0])


@pytest.mark.parametrize("clip", GRID_CLIPS)
def test_motion_scale_zero_and_the_reference_frame_give_the_source(clip) -> None:
    S, D = source_points(), driving_points(clip)
    for motion in ("relative", "absolute"):
        target, _ = transfer_motion(S, D, motion=motion, motion_scale=0.0)
        np.testing.assert_allclose(target, np.broadcast_to(S, D.shape), atol=1e-9)
    for reference in ("first", "best", "10", "-1"):
        target, ref = transfer_motion(S, D, reference=reference)
        assert ref == {"first": 0, "10": 10, "-1": 74}.get(reference, ref)
        np.testing.assert_allclose(target[ref], S, atol=1e-9)
        assert np.abs(target - S).max() > 5.0  # the other frames move (pixels of the 1024 frame)


def test_mouth_openness_follows_the_driving(capsys) -> None:
    S = source_points()
    rows = []
    for clip in GRID_CLIPS:
        D = driving_points(clip)
        corr, refs = {}, {}
        for reference in ("best", "first"):
            target, refs[reference] = transfer_motion(S, D, reference=reference)
            corr[reference] = np.corrcoef(mouth_openness(target), mouth_openness(D))[0, 1]
        rows.append(f"{clip} best (frame {refs['best']}) {corr['best']:.3f}, first {corr['first']:.3f}")
        assert corr["best"] >= 0.95, rows[-1]
    with capsys.disabled():
        print("\nmouth openness, target vs driving, correlation: " + "; ".join(rows))
    # lbax4n starts with an open mouth: from its first frame the source's mouth cannot close (why best is default).
    target, _ = transfer_motion(S, driving_points("grid_lbax4n"), reference="first")
    assert np.corrcoef(mouth_openness(target), mouth_openness(driving_points("grid_lbax4n")))[0, 1] < 0.8


def test_face_shape_stays_the_sources() -> None:
    """Procrustes distance (scipy's disparity) of jaw and eye points: the relative target is closer to the source
    than to the driving frame on every frame; the absolute target (the driving itself) is the opposite."""
    S, D = source_points(), driving_points("grid_lrwp9a")
    idx = list(SHAPE)
    for motion, closer_to_source in (("relative", True), ("absolute", False)):
        target, _ = transfer_motion(S, D, motion=motion)
        to_source = np.array([procrustes(S[idx], t[idx])[2] for t in target])
        to_driving = np.array([procrustes(d[idx], t[idx])[2] for d, t in zip(D, target)])
        assert ((to_source < to_driving) == closer_to_source).all(), motion


def test_regions_keep_the_other_points_at_the_sources() -> None:
    S, D = source_points(), driving_points("grid_lbax4n")
    mouth = np.zeros(70, bool)
    mouth[list(LIPS)] = True
    target, _ = transfer_motion(S, D, regions="lips")
    np.testing.assert_array_equal(target[:, ~mouth], np.broadcast_to(S[~mouth], (len(D), int((~mouth).sum()), 2)))
    assert np.corrcoef(mouth_openness(target), mouth_openness(D))[0, 1] >= 0.95
    eyes_lips, _ = transfer_motion(S, D, regions="eyes, lips")
    np.testing.assert_allclose(eyes_lips[:, mouth], target[:, mouth])
    np.testing.assert_array_equal(eyes_lips[:, 17:36], np.broadcast_to(S[17:36], (len(D), 19, 2)))
    assert np.abs(eyes_lips[:, 36:48] - S[36:48]).max() > 0.5
    # regions=pose: every frame is the source moved as a whole (a similarity of it), and the head does move.
    posed, _ = transfer_motion(S, D, regions="pose")
    z = S[:, 0] + 1j * S[:, 1]
    for frame in posed:
        w = frame[:, 0] + 1j * frame[:, 1]
        (a, b), *_ = np.linalg.lstsq(np.stack([z, np.ones_like(z)], axis=1), w, rcond=None)
        np.testing.assert_allclose(a * z + b, w, atol=1e-6)
    assert np.abs(posed - S).max() > 1.0


def test_absolute_motion_is_the_driving_landmarks() -> None:
    S, D = source_points(), driving_points("grid_bbaf2n")
    target, ref = transfer_motion(S, D, motion="absolute")
    assert ref is None
    np.testing.assert_allclose(target, D, atol=1e-9)  # what reenact.py fed the mapper before issue 11


def synthetic_driving(S: np.ndarray, angles: np.ndarray, opening: np.ndarray) -> np.ndarray:
    """A driving face (the source widened by 10%: another person) that opens its mouth by ``opening`` [T]
    (pixels, lower lip down) and turns in-plane by ``angles`` [T] (radians) about its centre."""
    d_ref = S.copy()
    d_ref[:, 0] = (S[:, 0] - S[:, 0].mean()) * 1.1 + S[:, 0].mean()
    frames = np.repeat(d_ref[None], len(angles), axis=0)
    frames[:, [*range(55, 60), *range(65, 68)], 1] += opening[:, None]
    frames[:, 5:12, 1] += opening[:, None] / 2  # the chin follows
    centre = d_ref.mean(axis=0)
    c, s = np.cos(angles)[:, None], np.sin(angles)[:, None]
    x, y = frames[..., 0] - centre[0], frames[..., 1] - centre[1]
    return np.stack([c * x - s * y + centre[0], s * x + c * y + centre[1]], axis=-1)


def test_pose_is_transferred_relatively_or_kept() -> None:
    S = source_points()
    angles = np.deg2rad(np.linspace(0.0, 12.0, 9))
    opening = np.linspace(0.0, 40.0, 9)
    D = synthetic_driving(S, angles, opening)
    driven, _ = transfer_motion(S, D, reference="first")
    np.testing.assert_allclose(eye_angle(driven) - eye_angle(S), angles, atol=1e-6)
    half, _ = transfer_motion(S, D, reference="first", motion_scale=0.5)
    np.testing.assert_allclose(eye_angle(half) - eye_angle(S), angles / 2, atol=1e-6)
    kept, _ = transfer_motion(S, D, reference="first", pose="source")
    np.testing.assert_allclose(eye_angle(kept), eye_angle(S), atol=1e-6)
    # With the pose kept, what is left is the mouth opening, scaled to the source: the similarity from the
    # widened face to the source scales by between 1 / 1.1 (its width) and 1 (its height).
    gap = kept[:, 66, 1] - kept[:, 62, 1] - (S[66, 1] - S[62, 1])
    assert np.all((gap >= opening / 1.1 - 1e-6) & (gap <= opening + 1e-6)) and gap[-1] > 30, gap
    np.testing.assert_allclose(kept[:, list(STABLE)][:, :4], np.broadcast_to(S[[0, 1, 15, 16]], (9, 4, 2)), atol=1e-6)
    # Absolute motion with the source's pose: the driving's shape and expression, at the source's eye angle.
    absolute, _ = transfer_motion(S, D, motion="absolute", pose="source")
    np.testing.assert_allclose(eye_angle(absolute), eye_angle(S), atol=1e-3)
    for frame, d in zip(absolute, D):  # each frame is the driving frame moved as a whole: its shape stays
        z, w = d[:, 0] + 1j * d[:, 1], frame[:, 0] + 1j * frame[:, 1]
        (a, b), *_ = np.linalg.lstsq(np.stack([z, np.ones_like(z)], axis=1), w, rcond=None)
        np.testing.assert_allclose(a * z + b, w, atol=1e-6)


def test_best_reference_matches_the_sources_mouth_and_eyes() -> None:
    S = source_points()
    opening = np.array([30.0, 12.0, 0.0, 25.0, 6.0])
    D = synthetic_driving(S, np.zeros(5), opening)
    assert reference_frame("best", D, S) == 2
    np.testing.assert_allclose(expression_distance(D, S)[2], expression_distance(D[2], S))
    for clip in GRID_CLIPS:  # the source's mouth is closed: best finds a closed driving mouth
        D = driving_points(clip)
        ref = reference_frame("best", D, S)
        assert mouth_openness(D)[ref] <= np.min(mouth_openness(D)) + 0.01, (clip, ref)


def test_lips_never_cross() -> None:
    """From an open-mouthed reference frame, a closing driving mouth would push the source's upper inner lip
    through the lower one: the gap stops at closed (checked with the source's pose kept, so that image y is the
    face's vertical)."""
    S, D = source_points(), driving_points("grid_lbax4n")
    target, _ = transfer_motion(S, D, reference="first", pose="source")
    for upper, lower in ((61, 67), (62, 66), (63, 65)):
        floor = min(0.0, S[lower, 1] - S[upper, 1])
        assert (target[:, lower, 1] - target[:, upper, 1] >= floor - 1e-9).all()
    free = D[:, 62, 1] - D[:, 66, 1] - (D[0, 62, 1] - D[0, 66, 1])  # how far the driving closes beyond frame 0
    assert free.max() > 5.0  # so without the stop the lips would cross by pixels


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"motion": "abs"}, "motion must be absolute or relative, got 'abs'"),
        ({"pose": "head"}, "pose must be driving or source, got 'head'"),
        ({"reference": "middle"}, "reference must be first, best or a frame number, got 'middle'"),
        ({"reference": "75"}, "reference frame 75 is outside the driving clip's 75 frames"),
        ({"motion_scale": -1.0}, "motion_scale must be a number >= 0, got -1.0"),
        ({"regions": "lips,mouth"}, "regions: unknown mouth; use a comma list of all, expression, lips, eyes"),
        ({"regions": "pose", "pose": "source"}, "regions=pose moves only the head pose, but pose=source keeps"),
    ],
)
def test_bad_options_are_one_line_errors(kwargs, message) -> None:
    with pytest.raises(ValueError) as err:
        transfer_motion(source_points(), driving_points("grid_bbaf2n"), **kwargs)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_readme_figure(tmp_path) -> None:
    from scripts.motion_figure import GREEN, RED, YELLOW, main

    out = main([str(SAMPLES / "images" / "london_003_neutral.jpg"), str(SAMPLES / "videos" / "grid_lrwp9a.mpg"),
                "--out", str(tmp_path / "motion.png"), "--size", "96"])  # fmt: skip
    from PIL import Image

    image = np.asarray(Image.open(out))
    assert image.shape == (96, 4 * 96, 3)
    panels = [image[:, k * 96 : (k + 1) * 96].reshape(-1, 3) for k in range(4)]
    has = [{c for c in (GREEN, RED, YELLOW) if (panel == c).all(axis=1).any()} for panel in panels]
    assert has == [{GREEN}, {RED}, {GREEN, RED}, {GREEN, YELLOW}]


def test_all_sample_pairs(capsys) -> None:
    """Every London neutral photo x every GRID clip: the openness of the chosen reference frame (ours against a
    whole-face choice, scipy's Procrustes disparity over the 68 iBUG points, as FOMM's find_best_frame), and on
    how many frames the target's face shape is closer to the source's than to the driving's."""
    from conftest import LONDON

    idx = list(SHAPE)
    rows, fractions, ours, whole_face = [], [], [], []
    for name in [n for n in LONDON if "neutral" in n]:
        S = source_points(name)
        for clip in GRID_CLIPS:
            D = driving_points(clip)
            target, ref = transfer_motion(S, D)
            fomm = int(np.argmin([procrustes(S[:68], d[:68])[2] for d in D]))
            to_source = np.array([procrustes(S[idx], t[idx])[2] for t in target])
            to_driving = np.array([procrustes(d[idx], t[idx])[2] for d, t in zip(D, target)])
            fractions.append(float((to_source < to_driving).mean()))
            openness = mouth_openness(D)
            ours.append(openness[ref] - openness.min())
            whole_face.append(openness[fomm] - openness.min())
            rows.append(
                f"{name[7:10]}/{clip[5:]} {fractions[-1]:.2f} ref +{ours[-1]:.3f} (whole face +{whole_face[-1]:.3f})"
            )
    with capsys.disabled():
        print("\nshape closer to the source (fraction of frames), reference openness above the clip's minimum (IOD):")
        print("  " + "\n  ".join(rows))
        print(f"  mean {np.mean(fractions):.3f}, worst {min(fractions):.2f}; ref openness above min: ours max "
              f"{max(ours):.3f}, whole face max {max(whole_face):.3f}")  # fmt: skip
    assert max(ours) <= 0.02 and max(whole_face) > 0.05
    assert np.mean(fractions) >= 0.95 and min(fractions) >= 0.75
