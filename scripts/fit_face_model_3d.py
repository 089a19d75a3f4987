"""Re-derive ``reenactment.faces.head_pose.FACE_MODEL_68``, the 3D mean face the head-pose metric (ARD) fits.

Example: ``python scripts/fit_face_model_3d.py ../shared/samples/images/london_*_neutral.jpg``

For each frontal photo: dlib's 68 points give x, y (the layout the metric detects), MediaPipe's face mesh
(``mediapipe==0.10.21``, the vertices of ``MEDIAPIPE_TO_IBUG``) gives each point's depth z in the same pixel units.
``reenactment.faces.head_pose.fit_face_model`` averages them (Procrustes, symmetric, pitch levelled). Prints the table
as Python.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np

from reenactment.faces.head_pose import fit_face_model
from reenactment.faces.landmarks import MEDIAPIPE_TO_IBUG, LandmarkDetector
from stylegan3.config import exit_with_error, parse_cli
from stylegan3.images import read_image


def faces_3d(paths: list[Path]) -> np.ndarray:
    """[N, 68, 3]: dlib (x, y) pixels and MediaPipe depth z (pixels, away from the camera) per photo."""
    from mediapipe.python.solutions import face_mesh

    det = LandmarkDetector("dlib", on_multiple="error")
    a = [i for i, _ in MEDIAPIPE_TO_IBUG]
    b = [j for _, j in MEDIAPIPE_TO_IBUG]
    faces = []
    with face_mesh.FaceMesh(static_image_mode=True, max_num_faces=1, refine_landmarks=True) as mesh:
        for path in paths:
            image = read_image(path)
            result = mesh.process(image)
            if not result.multi_face_landmarks:
                raise SystemExit(f"error: MediaPipe found no face in {path}")
            # MediaPipe's z is normalised by the image width, like x.
            z = np.array([p.z for p in result.multi_face_landmarks[0].landmark]) * image.shape[1]
            faces.append(np.column_stack([det(image, name=str(path))[:68], (z[a] + z[b]) / 2]))
    return np.asarray(faces, dtype=np.float64)


@dataclass
class FitFaceModelConfig:
    POSITIONAL: ClassVar[tuple[str, ...]] = ("images",)
    images: list[str] = field(default_factory=list)  # frontal, neutral face photos (one face each)


def main(argv: list[str] | None = None) -> np.ndarray:
    cfg = parse_cli(FitFaceModelConfig, argv, __doc__)
    if not cfg.images:
        exit_with_error("give one or more frontal face photos")
    model = fit_face_model(faces_3d([Path(p) for p in cfg.images]))
    print("FACE_MODEL_68 = np.array(\n    [")
    for point in model:
        x, y, z = (round(float(v), 4) + 0.0 for v in point)  # + 0.0: no "-0.0"
        print(f"        [{x:.4f}, {y:.4f}, {z:.4f}],")
    print("    ],\n    dtype=np.float64,\n)")
    return model


if __name__ == "__main__":
    main()
