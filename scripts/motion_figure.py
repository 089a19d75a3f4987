"""The motion-transfer picture of docs/reenact.md: source | driving frame | absolute landmarks | relative landmarks.

python scripts/motion_figure.py ../shared/samples/images/london_003_neutral.jpg \
    ../shared/samples/videos/grid_lrwp9a.mpg --out docs/motion.png

Panels, each the aligned face at ``--size`` pixels: the source with its landmarks (green); the driving frame (by
default the one with the widest-open mouth) with its landmarks (red); the source with the driving landmarks as
they are (``motion=absolute``: the driving face's shape, red) over its own (green); the source with the
relative target (``motion=relative``, the default: its own shape, moved, yellow) over its own (green).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from reenactment.data.prepare import mouth_openness
from reenactment.faces.align import Crop, face_crop, transform_points, warp_crop
from reenactment.faces.landmark_image import render_landmark_image
from reenactment.faces.landmarks import LandmarkDetector
from reenactment.faces.motion import transfer_motion
from reenactment.pipeline import DrivingOptions, _driving_frames, track_driving
from stylegan3.config import exit_with_error, parse_cli
from stylegan3.images import write_image

GREEN, RED, YELLOW = (60, 220, 60), (235, 50, 50), (250, 220, 40)


def overlay(image: np.ndarray, points: np.ndarray, colour: tuple[int, int, int]) -> np.ndarray:
    """[S, S, 3] uint8 with the landmark strokes of [70, 2] points (its own pixels) painted in ``colour``."""
    side = image.shape[0]
    strokes = render_landmark_image(points, size=side, image_size=side, line_width=1.5, dot_diameter=2.5)[..., 0] > 0
    out = image.copy()
    out[strokes] = colour
    return out


def motion_figure(source: Path, driving: Path, size: int = 200, frame: int | None = None) -> np.ndarray:
    """[size, 4 * size, 3] uint8: the four panels of the module docstring."""
    detector = LandmarkDetector("dlib")
    photo, points = detector.read(source)
    aligned, transform = warp_crop(photo, face_crop(points), size=size)
    src = transform_points(transform, points.astype(np.float64))
    track = track_driving(driving, detector, size, DrivingOptions())
    t = int(np.argmax(mouth_openness(track.points))) if frame is None else frame
    absolute, _ = transfer_motion(src, track.points, motion="absolute")
    relative, _ = transfer_motion(src, track.points)
    driving_frame = next(f for i, f in enumerate(_driving_frames(driving)) if i == t)
    driving_aligned, _ = warp_crop(driving_frame, Crop.from_array(track.crops[t]), size=size)
    panels = [
        overlay(aligned, src, GREEN),
        overlay(driving_aligned, track.points[t], RED),
        overlay(overlay(aligned // 2, src, GREEN), absolute[t], RED),
        overlay(overlay(aligned // 2, src, GREEN), relative[t], YELLOW),
    ]
    return np.concatenate(panels, axis=1)


@dataclass
class MotionFigureConfig:
    POSITIONAL: ClassVar[tuple[str, ...]] = ("source", "driving")
    source: str = ""  # source photo
    driving: str = ""  # driving video (or image)
    out: str = "docs/motion.png"  # the picture to write
    size: int = 200  # panel side in pixels
    frame: int | None = None  # driving frame; null: the widest-open mouth


def main(argv: list[str] | None = None) -> Path:
    cfg = parse_cli(MotionFigureConfig, argv, __doc__)
    if not cfg.source or not cfg.driving:
        exit_with_error("give a source photo and a driving video: motion_figure.py SOURCE DRIVING")
    out = Path(cfg.out)
    write_image(out, motion_figure(Path(cfg.source), Path(cfg.driving), cfg.size, cfg.frame), png_compression=9)
    print(f"wrote {out}")
    return out


if __name__ == "__main__":
    main()
