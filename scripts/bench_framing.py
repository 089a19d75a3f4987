"""Measure where a generator draws its faces, and check that aligned photos put theirs in the same places.

1. ``samples`` of the generator's own faces (seeds 0..samples-1), upscaled ``upscale`` times, go through dlib; for
   each face found, FFHQ's crop of its landmarks is compared with the sample's square: the square's side in FFHQ
   sides, and its centre as a fraction of the eye-to-mouth vector from the eye midpoint (``stylegan3.framing``). The
   medians are the framing to use.
2. The photos are aligned with the generator's framing (``G.framing``) at the generator's size, upscaled the same
   way, and go through dlib too. Eyes, nose tip and mouth centre are reported for both sets, in fractions of the
   square (mean and standard deviation): with the right framing the two agree.

    python -m scripts.bench_framing network=digiface-dcgan-64 > docs/bench/digiface_framing.log
"""

from __future__ import annotations

import glob
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

import stylegan3
from reenactment.faces.align import align_face, face_crop
from reenactment.faces.landmarks import LandmarkDetector, NoFaceError, eye_centres
from stylegan3.config import parse_cli
from stylegan3.images import read_image
from stylegan3.sampling import generate


@dataclass
class BenchFramingConfig:
    network: str = "digiface-dcgan-64"  # generator
    samples: int = 200  # seeds 0..samples-1
    upscale: int = 4  # dlib's HOG detector needs faces larger than 64 px
    photos: str = "../shared/samples/images/london_*.jpg"  # glob of photos to align with the generator's framing


def _parts(points: np.ndarray, side: float) -> dict[str, np.ndarray]:
    right, left = eye_centres(points)
    return {
        "right eye": right / side,
        "left eye": left / side,
        "nose tip": points[30] / side,
        "mouth centre": (points[48] + points[54]) / 2 / side,
    }


def _upscaled(image: np.ndarray, factor: int) -> np.ndarray:
    h, w = image.shape[:2]
    return np.asarray(Image.fromarray(image).resize((w * factor, h * factor), Image.Resampling.BICUBIC))


def _landmarks(detector: LandmarkDetector, image: np.ndarray, factor: int) -> np.ndarray | None:
    """dlib's points of the largest face in ``image`` upscaled ``factor`` times, in ``image``'s pixels (or None)."""
    try:
        return (detector(_upscaled(image, factor)) + 0.5) / factor - 0.5
    except NoFaceError:
        return None


def _table(rows: dict[str, list[dict[str, np.ndarray]]]) -> None:
    names = list(next(iter(rows.values()))[0])
    print(f"{'part':<14}" + "".join(f"{label + ' x, y (mean +- sd)':>40}" for label in rows))
    for name in names:
        cells = []
        for found in rows.values():
            xy = np.stack([f[name] for f in found])
            m, s = xy.mean(0), xy.std(0)
            cells.append(f"{m[0]:.3f} +- {s[0]:.3f}, {m[1]:.3f} +- {s[1]:.3f}")
        print(f"{name:<14}" + "".join(f"{c:>40}" for c in cells))


def main(argv: list[str] | None = None) -> None:
    cfg = parse_cli(BenchFramingConfig, argv, __doc__)
    try:
        G = stylegan3.load(cfg.network)
    except (ValueError, OSError) as err:
        raise SystemExit(f"error: {err}") from None
    res = G.img_resolution
    detector = LandmarkDetector("dlib")
    print(f"framing benchmark: {cfg.network} ({res} px), its framing {G.framing}, torch {torch.__version__}")
    images = generate(G, list(range(cfg.samples)))
    sides, centres, across, sample_parts = [], [], [], []
    for image in images:
        points = _landmarks(detector, image, cfg.upscale)
        if points is None:
            continue
        crop = face_crop(points, framing="ffhq")
        right, left = eye_centres(points)
        eye_mid = (right + left) / 2
        eye_to_mouth = (points[48] + points[54]) / 2 - eye_mid
        offset = np.full(2, (res - 1) / 2) - eye_mid
        norm = float(eye_to_mouth @ eye_to_mouth)
        sides.append(res / crop.side)
        centres.append(float(offset @ eye_to_mouth) / norm)
        across.append(float(offset[0] * eye_to_mouth[1] - offset[1] * eye_to_mouth[0]) / norm)
        sample_parts.append(_parts(points, res))
    n = len(sides)
    print(f"dlib found a face in {n} of {cfg.samples} samples (upscaled {cfg.upscale}x)")
    if n == 0:
        raise SystemExit("error: no face found in any sample: is this a face generator?")
    q = [25, 50, 75]
    print("sample square relative to FFHQ's crop (quartiles 25/50/75):")
    print(f"  side   (FFHQ sides):                    {np.percentile(sides, q).round(3).tolist()}")
    print(f"  centre (eye-to-mouth from eye midpoint): {np.percentile(centres, q).round(3).tolist()}")
    print(f"  centre across the eye-to-mouth line:     {np.percentile(across, q).round(3).tolist()}")
    print(f"  measured framing: side {np.median(sides):.2f}, centre {np.median(centres):.2f}")

    photo_parts, missed = [], []
    for path in sorted(glob.glob(cfg.photos)):
        image = read_image(path)
        points = detector(image, name=path)
        aligned, _ = align_face(image, points, size=res, framing=G.framing)
        found = _landmarks(detector, aligned, cfg.upscale)
        if found is None:
            missed.append(path)
            continue
        photo_parts.append(_parts(found, res))
    print(f"photos aligned with {G.framing.name!r} framing at {res} px: dlib found {len(photo_parts)} faces", end="")
    print(f" (missed: {', '.join(missed)})" if missed else "")
    print("landmark positions in fractions of the square:")
    rows = {f"samples (n={n})": sample_parts}
    if photo_parts:
        rows[f"photos (n={len(photo_parts)})"] = photo_parts
    _table(rows)


if __name__ == "__main__":
    main()
