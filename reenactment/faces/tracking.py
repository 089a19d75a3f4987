"""How a video's landmark track is steadied: the One-Euro smoothing of the points and the crop's tilt and
low-pass. One option group, used by dataset preparation and by the driving clip of a reenactment, so training
data and driving tracks are made alike."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .smoothing import smooth_landmarks


@dataclass
class TrackingOptions:
    smooth: bool = True  # smooth video landmark tracks over time (zero-phase One-Euro)
    smooth_min_cutoff: float = 4.0  # One-Euro minimum cut-off frequency, Hz
    smooth_beta: float = 3.0  # One-Euro speed coefficient (positions in inter-ocular distances)
    smooth_mouth_min_cutoff: float = 4.0  # the lips' own minimum cut-off, Hz
    smooth_mouth_beta: float = 50.0  # the lips' own speed coefficient: high, so brief closures (p, b, m) stay closed
    tilt: str = "eyes"  # crop angle: eyes (eye line level) or ffhq (FFHQ's eye/mouth blend)
    crop: str = "smooth"  # video crop: smooth (slow low-pass), fixed (one crop per clip) or none (per frame)
    crop_sigma_s: float = 0.3  # crop low-pass width in seconds (crop=smooth)

    def smoothed(self, track: np.ndarray, fps: float) -> np.ndarray:
        """``track`` [T, K, 2] smoothed with these One-Euro settings (the caller decides whether to smooth)."""
        return smooth_landmarks(
            track,
            fps,
            min_cutoff=self.smooth_min_cutoff,
            beta=self.smooth_beta,
            mouth_min_cutoff=self.smooth_mouth_min_cutoff,
            mouth_beta=self.smooth_mouth_beta,
        )
