"""Re-derive ``reenactment.faces.landmarks.MEDIAPIPE_TO_IBUG``: which face-mesh vertices best match dlib's 68 points.

Example: ``python scripts/fit_mediapipe_mapping.py --fit ../shared/samples/images --check ../shared/samples/videos``

For every iBUG point it takes the mesh vertex, or the midpoint of two nearby vertices (closer than 0.15 of the
inter-ocular distance), with the smallest mean distance to dlib's point over the fit images, and reports the
mean distance on held-out video frames, as a fraction of the inter-ocular distance. Prints the table as Python.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from reenactment.faces.landmarks import LandmarkDetector, inter_ocular_distance
from reenactment.media.video import VIDEO_SUFFIXES, VideoReader
from stylegan3.config import exit_with_error, parse_cli
from stylegan3.images import IMAGE_SUFFIXES, read_image


def collect(paths: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    """dlib's 68 points [N, 68, 2] and the mesh [N, 468, 2] on every image and video frame with one face each."""
    dlib_det = LandmarkDetector("dlib")
    mesh_det = LandmarkDetector("mediapipe")
    ibug, mesh = [], []

    def add(image: np.ndarray) -> None:
        faces, meshes = dlib_det.detect_all(image), mesh_det._impl.mesh(image)
        if len(faces) == 1 and len(meshes) == 1:
            ibug.append(faces[0].points[:68])
            mesh.append(meshes[0][:468])

    for path in paths:
        if path.suffix.lower() in IMAGE_SUFFIXES:
            add(read_image(path))
        elif path.suffix.lower() in VIDEO_SUFFIXES:
            with VideoReader(path) as reader:
                for frame in reader:
                    add(frame)
    return np.asarray(ibug, np.float64), np.asarray(mesh, np.float64)


def fit_mapping(
    ibug: np.ndarray, mesh: np.ndarray, candidates: int = 10, max_gap: float = 0.15
) -> list[tuple[int, int]]:
    """Per iBUG point, the vertex pair (a, b) whose midpoint is closest on average (a == b for one vertex)."""
    iod = inter_ocular_distance(ibug)[:, None]
    mapping = []
    for k in range(68):
        dist = np.linalg.norm(mesh - ibug[:, k : k + 1], axis=-1) / iod  # [N, V]
        mean = dist.mean(0)
        best_err, best = mean.min(), (int(mean.argmin()),) * 2
        top = np.argsort(mean)[:candidates]
        for i, a in enumerate(top):
            for b in top[i + 1 :]:
                if (np.linalg.norm(mesh[:, a] - mesh[:, b], axis=-1) / iod[:, 0]).mean() >= max_gap:
                    continue
                err = (np.linalg.norm((mesh[:, a] + mesh[:, b]) / 2 - ibug[:, k], axis=-1) / iod[:, 0]).mean()
                if err < best_err:
                    best_err, best = err, (int(min(a, b)), int(max(a, b)))
        mapping.append(best)
    return mapping


def mapping_error(ibug: np.ndarray, mesh: np.ndarray, mapping: list[tuple[int, int]]) -> np.ndarray:
    """Distance per sample and point, [N, 68], as a fraction of the inter-ocular distance."""
    a, b = zip(*mapping)
    pred = (mesh[:, list(a)] + mesh[:, list(b)]) / 2
    return np.linalg.norm(pred - ibug, axis=-1) / inter_ocular_distance(ibug)[:, None]


def files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES + VIDEO_SUFFIXES)


@dataclass
class FitMappingConfig:
    fit: str = ""  # folder of photos to fit on
    check: str | None = None  # folder of held-out images/videos to report on


def main(argv: list[str] | None = None) -> list[tuple[int, int]]:
    cfg = parse_cli(FitMappingConfig, argv, __doc__)
    if not cfg.fit:
        exit_with_error("give --fit FOLDER (photos to fit on)")
    ibug, mesh = collect([p for p in files(Path(cfg.fit)) if p.suffix.lower() in IMAGE_SUFFIXES])
    mapping = fit_mapping(ibug, mesh)
    print(f"fit on {len(ibug)} faces: mean error {mapping_error(ibug, mesh, mapping).mean():.4f} x IOD")
    if cfg.check:
        ibug_c, mesh_c = collect(files(Path(cfg.check)))
        print(f"held out, {len(ibug_c)} faces: mean error {mapping_error(ibug_c, mesh_c, mapping).mean():.4f} x IOD")
    print("MEDIAPIPE_TO_IBUG = (" + ", ".join(f"({a}, {b})" for a, b in mapping) + ")")
    return mapping


if __name__ == "__main__":
    main()
