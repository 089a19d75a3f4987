"""One-Euro smoothing of landmark tracks: less jitter, no lag when zero-phase, gaps kept, scale-free."""

from __future__ import annotations

import numpy as np
import pytest

from reenactment.faces.landmarks import inter_ocular_distance
from reenactment.faces.smoothing import OneEuroFilter, brief_closures, jitter, lag_frames, smooth_landmarks

FPS = 25.0


def face_points(iod: float = 100.0) -> np.ndarray:
    """A rough 70-point face, [70, 2], whose eye centres are ``iod`` apart."""
    rng = np.random.default_rng(0)
    pts = rng.uniform(-1.0, 1.0, (70, 2)) * iod
    a = np.linspace(0, 2 * np.pi, 7)[:6]
    ring = np.c_[0.25 * iod * np.cos(a), 0.1 * iod * np.sin(a)]
    pts[36:42] = ring + [-iod / 2, -0.5 * iod]
    pts[42:48] = ring + [iod / 2, -0.5 * iod]
    return pts + 500.0


def moving_face(frames: int = 250, iod: float = 100.0, noise: float = 0.0, seed: int = 0) -> np.ndarray:
    """[T, 70, 2]: a face swaying (0.4 Hz, 0.25 IOD) and nodding (0.25 Hz), plus Gaussian noise in IOD."""
    t = np.arange(frames) / FPS
    motion = np.stack([0.25 * np.sin(2 * np.pi * 0.4 * t), 0.12 * np.sin(2 * np.pi * 0.25 * t + 1)], -1) * iod
    track = face_points(iod)[None] + motion[:, None]
    return track + np.random.default_rng(seed).normal(0.0, noise * iod, track.shape)


def test_inter_ocular_distance() -> None:
    np.testing.assert_allclose(inter_ocular_distance(face_points(80.0)), 80.0)
    assert inter_ocular_distance(moving_face(5)).shape == (5,)


def test_zero_phase_lowers_jitter_without_lag() -> None:
    noisy = moving_face(noise=0.01)
    smooth = smooth_landmarks(noisy, FPS)
    assert smooth.shape == noisy.shape
    assert jitter(smooth) < jitter(noisy) / 2
    assert abs(lag_frames(noisy, smooth)) <= 1
    assert abs(lag_frames(moving_face(), smooth)) <= 1


def test_causal_filter_lags() -> None:
    clean = moving_face()
    causal = smooth_landmarks(clean, FPS, min_cutoff=1.0, beta=0.5, zero_phase=False)
    assert 1 < lag_frames(clean, causal) < 5
    noisy = moving_face(noise=0.01)
    assert lag_frames(noisy, smooth_landmarks(noisy, FPS, zero_phase=False)) > 0


@pytest.mark.parametrize("zero_phase", [True, False])
def test_step_is_followed(zero_phase: bool) -> None:
    track = np.repeat(face_points()[None], 60, axis=0)
    track[30:] += [50.0, -20.0]  # a jump of half an IOD
    out = smooth_landmarks(track, FPS, zero_phase=zero_phase)
    progress = (out[:, :, 0] - track[0, :, 0]) / 50.0  # [T, K]: 0 before, 1 after
    assert (progress[35:] > 0.9).all()
    assert (np.abs(progress[45:] - 1) < 0.01).all()
    assert (np.abs(progress[:15]) < 0.01).all()
    if not zero_phase:
        np.testing.assert_allclose(out[:30], track[:30])  # causal: nothing moves before the step


def test_nan_gaps_are_kept() -> None:
    noisy = moving_face(noise=0.01)
    gappy = noisy.copy()
    gappy[100:110] = np.nan  # no face for 10 frames
    gappy[:3] = np.nan  # nor at the start
    gappy[50, 7] = [np.nan, 3.0]  # one point missing in one frame
    out = smooth_landmarks(gappy, FPS)
    missing = np.isnan(gappy).any(axis=-1)
    assert (np.isnan(out).any(axis=-1) == missing).all()
    assert np.isnan(out[missing]).all()
    assert np.isfinite(out[~missing]).all()
    # away from the gaps the result is the gap-free one
    reference = smooth_landmarks(noisy, FPS)
    np.testing.assert_allclose(out[25:45], reference[25:45], atol=0.1)  # 0.001 IOD
    np.testing.assert_allclose(out[60:85], reference[60:85], atol=0.1)
    causal = smooth_landmarks(gappy, FPS, zero_phase=False)
    assert (np.isnan(causal).any(axis=-1) == missing).all()


@pytest.mark.parametrize("zero_phase", [True, False])
def test_scale_invariance(zero_phase: bool) -> None:
    noisy = moving_face(noise=0.01)
    out = smooth_landmarks(noisy, FPS, zero_phase=zero_phase)
    out10 = smooth_landmarks(noisy * 10, FPS, zero_phase=zero_phase)
    np.testing.assert_allclose(out10, out * 10, rtol=1e-6)
    assert jitter(noisy * 10) == pytest.approx(jitter(noisy), rel=1e-9)


def test_explicit_scale() -> None:
    noisy = moving_face(noise=0.01)
    iod = inter_ocular_distance(noisy)
    by_default = smooth_landmarks(noisy, FPS)
    np.testing.assert_allclose(smooth_landmarks(noisy, FPS, scale=float(np.median(iod))), by_default)
    per_frame = smooth_landmarks(noisy, FPS, scale=np.full(len(noisy), np.median(iod)))
    np.testing.assert_allclose(per_frame, by_default)
    few = smooth_landmarks(noisy[:, :10], FPS)  # K < 48: scale 1 (pixels)
    np.testing.assert_allclose(few, smooth_landmarks(noisy[:, :10], FPS, scale=1.0))
    with pytest.raises(ValueError):
        smooth_landmarks(noisy, FPS, scale=np.ones(3))


@pytest.mark.parametrize("shift", [3, -2])
def test_lag_frames_detects_known_shift(shift: int) -> None:
    t = np.arange(300) / FPS
    signal = np.sin(2 * np.pi * 0.7 * t) + 0.6 * np.sin(2 * np.pi * 1.9 * t + 0.3) + 0.3 * np.sin(2 * np.pi * 3.1 * t)
    raw = np.stack([signal, np.cos(2 * np.pi * 0.45 * t)], -1)[:, None]  # [T, 1, 2]
    shifted = np.roll(raw, shift, axis=0)  # shifted[t] = raw[t - shift]
    assert lag_frames(raw[10:-10], shifted[10:-10]) == pytest.approx(shift, abs=0.2)
    assert lag_frames(raw, raw) == pytest.approx(0.0, abs=1e-9)


def test_jitter_definition() -> None:
    t = np.arange(20.0)
    track = np.zeros((20, 48, 2))
    track[:, :, 0] = 0.5 * t[:, None] ** 2  # second difference 1 px per frame^2 everywhere
    assert jitter(track, iod=4.0) == pytest.approx(0.25)
    assert jitter(track, iod=np.full(20, 2.0)) == pytest.approx(0.5)


def test_one_euro_filter_step_by_step() -> None:
    f = OneEuroFilter(FPS, min_cutoff=1.0, beta=0.0)
    x0 = np.array([[1.0, 2.0], [3.0, 4.0]])
    np.testing.assert_array_equal(f(x0), x0)  # the first sample passes unchanged
    y = f(x0 + 1.0)
    alpha = (2 * np.pi / FPS) / (2 * np.pi / FPS + 1)  # beta 0: a fixed first-order low-pass at 1 Hz
    np.testing.assert_allclose(y, x0 + alpha)
    np.testing.assert_allclose(f(np.full((2, 2), 7.0)) - y, alpha * (7.0 - y))

    # timestamps at the frame rate give the same result as none
    g = OneEuroFilter(FPS)
    h = OneEuroFilter(FPS)
    xs = np.random.default_rng(0).normal(size=(20, 3))
    np.testing.assert_allclose([g(x) for x in xs], [h(x, t=k / FPS) for k, x in enumerate(xs)])
    with pytest.raises(ValueError):
        h(xs[0], t=0.0)
    h.reset()
    np.testing.assert_array_equal(h(xs[0], t=0.0), xs[0])
    with pytest.raises(ValueError):
        h(np.zeros(4))


def test_one_euro_filter_holds_missing_elements() -> None:
    f = OneEuroFilter(FPS)
    f(np.array([0.0, 0.0]))
    out = f(np.array([np.nan, 1.0]))
    assert np.isnan(out[0]) and np.isfinite(out[1])
    after = f(np.array([0.0, 1.0]))
    assert np.isfinite(after).all()
    assert after[0] == 0.0  # held state: the element saw only zeros


@pytest.mark.parametrize("backend", ["dlib", "mediapipe"])
def test_grid_clips_jitter_halved_without_lag(backend, capsys) -> None:
    from conftest import GRID_CLIPS, grid_track

    rows = []
    for clip in GRID_CLIPS:
        raw = grid_track(clip, backend).astype(np.float64)
        smooth = smooth_landmarks(raw, 25.0)  # the defaults used for video input
        causal = smooth_landmarks(raw, 25.0, zero_phase=False)
        ratio, lag = jitter(raw) / jitter(smooth), lag_frames(raw, smooth)
        rows.append(f"{clip} jitter {jitter(raw):.4f}->{jitter(smooth):.4f} ({ratio:.1f}x) lag {lag:+.2f}")
        rows[-1] += f" (causal: {lag_frames(smooth, causal):+.2f})"
        assert ratio >= 2.0 and abs(lag) <= 1.0, rows[-1]
    with capsys.disabled():
        print(f"\n{backend}: " + "; ".join(rows))


def test_brief_closures_finds_short_dips() -> None:
    series = np.full(30, 0.2)
    series[10:12] = 0.01  # a two-frame closure
    series[20] = 0.18  # too shallow
    np.testing.assert_array_equal(brief_closures(series), [10])


def test_mouth_gets_its_own_parameters() -> None:
    noisy = moving_face(noise=0.01)
    plain = smooth_landmarks(noisy, FPS)
    mouth = smooth_landmarks(noisy, FPS, mouth_beta=50.0)
    np.testing.assert_array_equal(mouth[:, :48], plain[:, :48])  # other points untouched
    np.testing.assert_array_equal(mouth[:, 68:], plain[:, 68:])
    assert not np.allclose(mouth[:, 48:68], plain[:, 48:68])
    np.testing.assert_allclose(smooth_landmarks(noisy, FPS, mouth_min_cutoff=4.0, mouth_beta=3.0), plain)


@pytest.mark.parametrize("backend", ["dlib", "mediapipe"])
def test_grid_clips_keep_lip_closures(backend, capsys) -> None:
    """Issue 11 item 4: the default smoothing (the pipeline's and prepare_dataset's) keeps brief lip closures
    closed and still halves the jitter of the stable points. Closure: the mean mouth openness (inter-ocular
    distances) at the raw track's brief closures; jitter: ``jitter`` of the stable points, and of the lips."""
    from conftest import GRID_CLIPS, grid_track

    from reenactment.data.prepare import PrepareOptions, mouth_openness
    from reenactment.faces.motion import LIPS, STABLE
    from reenactment.pipeline import DrivingOptions

    opts = DrivingOptions()
    prep = PrepareOptions()
    assert (prep.tracking.smooth_mouth_min_cutoff, prep.tracking.smooth_mouth_beta) == (
        opts.tracking.smooth_mouth_min_cutoff,
        opts.tracking.smooth_mouth_beta,
    )
    settings = {
        "raw": None,
        "one-euro for all (before)": {"min_cutoff": opts.tracking.smooth_min_cutoff, "beta": opts.tracking.smooth_beta},
        "lips their own (now)": {
            "min_cutoff": opts.tracking.smooth_min_cutoff,
            "beta": opts.tracking.smooth_beta,
            "mouth_min_cutoff": opts.tracking.smooth_mouth_min_cutoff,
            "mouth_beta": opts.tracking.smooth_mouth_beta,
        },
    }
    closed = {name: [] for name in settings}
    ranges = {name: [] for name in settings}
    stable_jitter = {name: [] for name in settings}
    lip_jitter = {name: [] for name in settings}
    for clip in GRID_CLIPS:
        raw = grid_track(clip, backend).astype(np.float64)
        iod = float(np.median(inter_ocular_distance(raw)))
        closures = brief_closures(mouth_openness(raw))
        for name, kwargs in settings.items():
            track = raw if kwargs is None else smooth_landmarks(raw, 25.0, **kwargs)
            openness = mouth_openness(track)
            closed[name] += list(openness[closures])
            ranges[name].append(np.percentile(openness, 95) - np.percentile(openness, 5))
            stable_jitter[name].append(jitter(track[:, list(STABLE)], iod))
            lip_jitter[name].append(jitter(track[:, list(LIPS)], iod))
    rows = [
        f"{backend}: {sum(len(brief_closures(mouth_openness(grid_track(c, backend)))) for c in GRID_CLIPS)} closures"
    ]
    for name in settings:
        shrink = 1 - np.array(ranges[name]) / np.array(ranges["raw"])
        rows.append(
            f"  {name:26s} openness at closures {np.mean(closed[name]):.4f} IOD, openness range (p5-p95) shrunk "
            f"{shrink.min():.0%}..{shrink.max():.0%}, jitter stable {np.mean(stable_jitter[name]):.4f} "
            f"lips {np.mean(lip_jitter[name]):.4f}"
        )
    with capsys.disabled():
        print("\n" + "\n".join(rows))
    raw_closed, before, now = (np.mean(closed[name]) for name in settings)
    assert len(closed["raw"]) >= 6
    assert now - raw_closed <= 0.5 * (before - raw_closed), rows  # at most half the lift of the old default
    assert np.mean(stable_jitter["raw"]) >= 2.0 * np.mean(stable_jitter["lips their own (now)"]), rows
    np.testing.assert_allclose(stable_jitter["lips their own (now)"], stable_jitter["one-euro for all (before)"])
    assert np.mean(lip_jitter["raw"]) >= 1.5 * np.mean(lip_jitter["lips their own (now)"]), rows
    assert min(np.array(ranges["lips their own (now)"]) / np.array(ranges["one-euro for all (before)"])) >= 1.0, rows
