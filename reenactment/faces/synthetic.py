"""A stand-in for the landmark detector: a mean face that turns its head and opens its mouth, for machines without
the dlib model or the sample clips (the benchmarks, ``latent_clips.py landmarks=true``, the GPU smoke run)."""

from __future__ import annotations

import numpy as np


class SyntheticFaces:
    """Stands in for the landmark detector: the n-th call returns the n-th frame of a mean face (FACE_MODEL_68 and
    the eye-centroid pupils) turning its head and opening its mouth, centred in a frame of ``size`` (w, h)."""

    backend = "synthetic"

    def __init__(self, size: tuple[int, int], frames: int = 75) -> None:
        from reenactment.faces.head_pose import FACE_MODEL_68, project, rotation_matrix

        w, h = size
        tracks = []
        for t in range(frames):
            phase = 2 * np.pi * t / frames
            model = FACE_MODEL_68.copy()
            model[[*range(5, 12), *range(56, 59), *range(65, 68)], 1] += 0.15 * (1 + np.sin(3 * phase))  # jaw, lip
            rotation = rotation_matrix(10 * np.sin(phase), 5 * np.cos(phase), 3 * np.sin(2 * phase))
            points = project(model, rotation, 0.25 * h, np.array([w / 2, h / 2]))
            pupils = [points[36:42].mean(0), points[42:48].mean(0)]
            tracks.append(np.concatenate([points, pupils]).astype(np.float32))
        self.tracks, self.calls = tracks, 0

    def __call__(self, image: np.ndarray, face: int = 0, name: str = "image") -> np.ndarray:
        points = self.tracks[self.calls % len(self.tracks)]
        self.calls += 1
        return points
