"""Temporal smoothing of landmark tracks: the One-Euro filter, run forward-backward for video files.

The One-Euro filter (Casiez, Roussel and Vogel, CHI 2012) is a first-order low-pass filter whose cutoff
rises with the signal's speed: ``cutoff = min_cutoff + beta * |speed|``. Slow motion is smoothed hard
(jitter goes), fast motion passes with little lag. Run causally it still lags; for offline tracks
:func:`smooth_landmarks` runs it forward and then backward over the forward result, so the two lags
cancel.

Since ``beta`` multiplies a speed, its meaning depends on units. :func:`smooth_landmarks` divides the
track by a face scale (the inter-ocular distance, IOD) first, so the defaults hold for any face size:
``beta`` is per (IOD / s).

Lips get their own parameters (``mouth_min_cutoff``, ``mouth_beta``): a closure for p, b or m lasts two or three
frames, and a low-pass that calms the still points lifts it (the mouth stays open). The video defaults keep the
rest cut-off (a still mouth is as steady) but raise the speed term (beta 50 instead of 3), so a moving mouth
passes almost unfiltered; measured by ``tests/test_smoothing.py::test_grid_clips_keep_lip_closures``.
"""

from __future__ import annotations

import numpy as np

from .landmarks import inter_ocular_distance
from .motion import LIPS


def _alpha(cutoff: np.ndarray | float, dt: np.ndarray | float) -> np.ndarray:
    """Smoothing factor of a first-order low-pass with ``cutoff`` (Hz) over a step of ``dt`` (s)."""
    r = 2.0 * np.pi * cutoff * dt
    return r / (r + 1.0)


class OneEuroFilter:
    """Causal One-Euro filter over arrays of any fixed shape (each element filtered on its own).

    ``f(x)`` takes the next sample (e.g. [70, 2] landmarks) and returns the filtered one (float64, same shape).
    Samples are ``1 / fps`` apart unless timestamps ``t`` (seconds, increasing) are given. A NaN element is a
    missing value: its state is held, the output for it is NaN that frame, and when it comes back its speed
    is measured over the whole gap.
    """

    def __init__(self, fps: float, min_cutoff: float = 4.0, beta: float = 3.0, d_cutoff: float = 1.0) -> None:
        if fps <= 0 or min_cutoff <= 0 or d_cutoff <= 0 or beta < 0:
            raise ValueError("OneEuroFilter needs fps, min_cutoff, d_cutoff > 0 and beta >= 0")
        self.fps = float(fps)
        self.min_cutoff = float(min_cutoff)
        self.beta = float(beta)
        self.d_cutoff = float(d_cutoff)
        self.reset()

    def __repr__(self) -> str:
        return (
            f"OneEuroFilter(fps={self.fps}, min_cutoff={self.min_cutoff}, beta={self.beta}, d_cutoff={self.d_cutoff})"
        )

    def reset(self) -> None:
        """Forget the past: the next sample passes unchanged."""
        self._x: np.ndarray | None = None  # last filtered value per element (NaN: never seen)
        self._dx: np.ndarray | None = None  # last filtered speed per element
        self._t_elem: np.ndarray | None = None  # time each element was last seen
        self._t: float | None = None  # time of the last call

    def __call__(self, x: np.ndarray, t: float | None = None) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if t is None:
            t = 0.0 if self._t is None else self._t + 1.0 / self.fps
        elif self._t is not None and t <= self._t:
            raise ValueError(f"timestamps must increase: got {t} after {self._t}")
        if self._x is None:
            self._x = np.full(x.shape, np.nan)
            self._dx = np.zeros(x.shape)
            self._t_elem = np.full(x.shape, np.nan)
        elif x.shape != self._x.shape:
            raise ValueError(f"sample shape {x.shape} differs from the filter's {self._x.shape}")
        self._t = float(t)
        present = np.isfinite(x)
        first = present & ~np.isfinite(self._x)
        update = present & ~first
        out = np.full(x.shape, np.nan)
        out[first] = x[first]
        self._x[first] = x[first]
        self._t_elem[first] = t
        if update.any():
            dt = t - self._t_elem[update]
            prev = self._x[update]
            dx = (x[update] - prev) / dt
            dx_hat = self._dx[update] + _alpha(self.d_cutoff, dt) * (dx - self._dx[update])
            cutoff = self.min_cutoff + self.beta * np.abs(dx_hat)
            x_hat = prev + _alpha(cutoff, dt) * (x[update] - prev)
            self._x[update] = x_hat
            self._dx[update] = dx_hat
            self._t_elem[update] = t
            out[update] = x_hat
        return out


def smooth_landmarks(
    track: np.ndarray,
    fps: float,
    min_cutoff: float = 4.0,
    beta: float = 3.0,
    d_cutoff: float = 1.0,
    zero_phase: bool = True,
    scale: float | np.ndarray | None = None,
    mouth_min_cutoff: float | None = None,
    mouth_beta: float | None = None,
) -> np.ndarray:
    """Smooth a landmark track with the One-Euro filter, in face-size units.

    Args:
        track: [T, K, 2] float (x, y) in pixels; NaN marks missing points or frames (no face).
        fps: frame rate of the track (Hz).
        min_cutoff: cutoff at rest (Hz).
        beta: cutoff increase (Hz) per unit of speed, speed in scale units per second (IOD / s by default).
        d_cutoff: cutoff of the speed estimate (Hz).
        zero_phase: True (for video files): filter forward, then backward over the forward result, so the
            lag cancels; False (for streams): the plain causal filter, which lags.
        scale: face size the positions are divided by before filtering and multiplied by after: a scalar,
            or [T] per frame (should itself be smooth; missing frames are interpolated). Default: the
            median inter-ocular distance of the track when K >= 48, else 1.

    Returns:
        [T, K, 2] float64; NaN exactly where the input point was missing. Gaps are bridged by linear
        interpolation before filtering, so the frames around a gap stay finite and continuous.
    """
    track = np.asarray(track, dtype=np.float64)
    if track.ndim != 3 or track.shape[-1] != 2:
        raise ValueError(f"track must be [T, K, 2], got shape {track.shape}")
    missing = ~np.isfinite(track).all(axis=-1)  # [T, K]: a point is missing if either coordinate is
    s = _track_scale(track, scale)
    x = _fill_gaps(np.where(missing[..., None], np.nan, track) / s)

    out = _one_euro(x, OneEuroFilter(fps, min_cutoff=min_cutoff, beta=beta, d_cutoff=d_cutoff), zero_phase)
    if (mouth_min_cutoff is not None or mouth_beta is not None) and track.shape[1] == 70:
        mouth = OneEuroFilter(
            fps,
            min_cutoff=min_cutoff if mouth_min_cutoff is None else mouth_min_cutoff,
            beta=beta if mouth_beta is None else mouth_beta,
            d_cutoff=d_cutoff,
        )
        out[:, list(LIPS)] = _one_euro(x[:, list(LIPS)], mouth, zero_phase)
    out = out * s
    out[missing] = np.nan
    return out


def _one_euro(x: np.ndarray, f: OneEuroFilter, zero_phase: bool) -> np.ndarray:
    """Run ``f`` over [T, ...] ``x`` along axis 0 (then backward over the result when ``zero_phase``)."""
    if not len(x):
        return x.copy()
    out = np.stack([f(frame) for frame in x])
    if zero_phase:
        f.reset()
        out = np.stack([f(frame) for frame in out[::-1]])[::-1]
    return out


def _track_scale(track: np.ndarray, scale: float | np.ndarray | None) -> float | np.ndarray:
    """The scale of :func:`smooth_landmarks`: a positive float, or [T, 1, 1]."""
    if scale is None:
        if track.shape[1] < 48:
            return 1.0
        iod = inter_ocular_distance(track)
        iod = iod[np.isfinite(iod) & (iod > 0)]
        return float(np.median(iod)) if len(iod) else 1.0
    scale = np.asarray(scale, dtype=np.float64)
    if scale.ndim == 0:
        if not (np.isfinite(scale) and scale > 0):
            raise ValueError(f"scale must be positive and finite, got {scale}")
        return float(scale)
    if scale.shape != (len(track),):
        raise ValueError(f"scale must be a scalar or [T] = [{len(track)}], got shape {scale.shape}")
    scale = _fill_gaps(np.where(scale > 0, scale, np.nan))
    if not np.isfinite(scale).all():
        raise ValueError("scale has no positive finite value")
    return scale[:, None, None]


def _fill_gaps(x: np.ndarray) -> np.ndarray:
    """Linearly interpolate the NaN runs of each series along axis 0 ([T, ...]); ends hold the nearest value.

    Series with no finite value stay NaN.
    """
    flat = x.reshape(len(x), -1).copy()
    frames = np.arange(len(x))
    for k in np.flatnonzero(~np.isfinite(flat).all(axis=0)):
        good = np.isfinite(flat[:, k])
        if good.any():
            flat[:, k] = np.interp(frames, frames[good], flat[good, k])
    return flat.reshape(x.shape)


def jitter(track: np.ndarray, iod: float | np.ndarray | None = None) -> float:
    """Mean acceleration magnitude, in inter-ocular distances per frame squared.

    ``mean over t and points of ||x[t+1] - 2 x[t] + x[t-1]|| / iod``, skipping terms with a missing point.

    Args:
        track: [T, K, 2] float (x, y) pixels, T >= 3.
        iod: the normaliser: a scalar or [T] per frame; default the median over frames of the per-frame
            inter-ocular distance (needs K >= 48).

    Returns:
        The mean, a float >= 0 (NaN if no term is finite).
    """
    track = np.asarray(track, dtype=np.float64)
    if track.ndim != 3 or track.shape[-1] != 2 or len(track) < 3:
        raise ValueError(f"track must be [T >= 3, K, 2], got shape {track.shape}")
    if iod is None:
        iod = float(np.nanmedian(inter_ocular_distance(track)))
    iod = np.asarray(iod, dtype=np.float64)
    if iod.ndim == 1:
        if iod.shape != (len(track),):
            raise ValueError(f"iod must be a scalar or [T] = [{len(track)}], got shape {iod.shape}")
        iod = iod[1:-1, None]
    acc = np.linalg.norm(track[2:] - 2 * track[1:-1] + track[:-2], axis=-1) / iod  # [T - 2, K]
    acc = acc[np.isfinite(acc)]
    return float(acc.mean()) if len(acc) else float("nan")


def lag_frames(raw: np.ndarray, smoothed: np.ndarray, max_lag: int = 5) -> float:
    """How many frames ``smoothed`` lags behind ``raw``, from the cross-correlation of their velocities.

    The velocities (first differences over frames, each series made zero-mean) are compared at integer
    shifts s in [-max_lag, max_lag], smoothed[t] against raw[t - s], by normalised cross-correlation; the
    best shift is refined to a sub-frame value by a parabola through it and its two neighbours (not at the
    ends of the range).

    Args:
        raw, smoothed: [T, ...] float tracks of the same shape (e.g. [T, K, 2]); NaN terms are skipped.
        max_lag: largest shift tried, in frames; T must exceed ``max_lag + 2``.

    Returns:
        The lag in frames: positive when ``smoothed`` is behind ``raw``.
    """
    raw = np.asarray(raw, dtype=np.float64)
    smoothed = np.asarray(smoothed, dtype=np.float64)
    if raw.shape != smoothed.shape:
        raise ValueError(f"raw and smoothed differ in shape: {raw.shape} vs {smoothed.shape}")
    if max_lag < 1 or len(raw) <= max_lag + 2:
        raise ValueError(f"need max_lag >= 1 and T > max_lag + 2, got max_lag={max_lag}, T={len(raw)}")
    v_raw = np.diff(raw.reshape(len(raw), -1), axis=0)
    v_smooth = np.diff(smoothed.reshape(len(smoothed), -1), axis=0)
    v_raw = v_raw - np.nanmean(v_raw, axis=0)
    v_smooth = v_smooth - np.nanmean(v_smooth, axis=0)
    n = len(v_raw)

    shifts = np.arange(-max_lag, max_lag + 1)
    score = np.empty(len(shifts))
    for k, s in enumerate(shifts):
        a = v_smooth[max(s, 0) : n + min(s, 0)]  # smoothed[t] ...
        b = v_raw[max(-s, 0) : n - max(s, 0)]  # ... against raw[t - s]
        ok = np.isfinite(a) & np.isfinite(b)
        a, b = a[ok], b[ok]
        denom = np.sqrt((a * a).sum() * (b * b).sum())
        score[k] = (a * b).sum() / denom if denom > 0 else -np.inf
    best = int(np.argmax(score))
    lag = float(shifts[best])
    if 0 < best < len(shifts) - 1:
        left, mid, right = score[best - 1 : best + 2]
        curvature = left - 2 * mid + right
        if curvature < 0:
            lag += 0.5 * (left - right) / curvature
    return lag


def brief_closures(openness: np.ndarray, depth: float = 0.04, window: int = 4) -> np.ndarray:
    """Frames where a mouth closes briefly (p, b, m): the indices t of an openness series [T] (e.g.
    ``reenactment.data.prepare.mouth_openness``, inter-ocular distances) that are the minimum of [t - window,
    t + window] (the first frame of a flat minimum) and lie at least ``depth`` below the maximum on each side
    within the window."""
    openness = np.asarray(openness, dtype=np.float64)
    frames = []
    for t in range(1, len(openness) - 1):
        before, after = openness[max(0, t - window) : t], openness[t + 1 : t + window + 1]
        lowest = openness[t] < before.min() and openness[t] <= after.min()
        if lowest and min(before.max(), after.max()) - openness[t] >= depth:
            frames.append(t)
    return np.array(frames, dtype=np.int64)
