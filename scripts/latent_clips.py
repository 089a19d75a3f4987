"""Write short synthetic clips a generator can reproduce: each video a slow walk in W between two seeds' latents
(untruncated), as PNG frames and a ``manifest.jsonl`` (video, frame, image): input for trying ``invert_dataset.py``
settings (``warm_start=sequential``, an encoder start) on a generator that knows no faces (the test fixtures).

python -m scripts.latent_clips --network ../shared/fixtures/stylegan/sg2_64.pkl --out out/clips videos=2 frames=4
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

import stylegan3
from reenactment.faces.synthetic import SyntheticFaces
from stylegan3 import WeightsFileError, WeightsNotFoundError
from stylegan3.config import exit_with_error, parse_cli
from stylegan3.images import write_image
from stylegan3.io import atomic_write
from stylegan3.runtime import resolve_impl
from stylegan3.sampling import synthesize, to_uint8, z_from_seeds


@dataclass
class LatentClipsConfig:
    network: str = "../shared/fixtures/stylegan/sg2_64.pkl"  # .pkl, weights folder or known name
    out: str = "out/clips"  # folder for the frames and manifest.jsonl
    videos: int = 2  # clips
    frames: int = 4  # frames per clip
    first_seed: int = 2000000  # video v walks from seed first_seed + 2v towards first_seed + 2v + 1
    step: float = 0.05  # share of the way between the two latents from one frame to the next
    impl: str = "auto"  # generator ops (runs on the CPU: auto is fast)
    landmarks: bool = False  # also a synthetic moving mean face per frame, an identity per clip and its first frame as
    # the source: a manifest train_mapper.py takes (with invert_dataset.py's latents), no detector model needed


def main(argv: list[str] | None = None) -> Path:
    cfg = parse_cli(LatentClipsConfig, argv, __doc__)
    try:
        G = stylegan3.load(cfg.network)
        G.set_impl(resolve_impl(cfg.impl, torch.device("cpu"), G))
    except (WeightsNotFoundError, WeightsFileError, OSError, ValueError) as err:
        exit_with_error(err)
    out = Path(cfg.out)
    faces = SyntheticFaces((G.img_resolution, G.img_resolution), cfg.frames) if cfg.landmarks else None
    lines = []
    for v in range(cfg.videos):
        seeds = [cfg.first_seed + 2 * v, cfg.first_seed + 2 * v + 1]
        with torch.no_grad():
            w_a, w_b = G.mapping(z_from_seeds(seeds, G.z_dim), None)
            ws = torch.stack([w_a + (w_b - w_a) * cfg.step * t for t in range(cfg.frames)])
            images = to_uint8(synthesize(G, ws))
        for t, image in enumerate(images):
            name = f"frames/video{v}/{t:06d}.png"
            write_image(out / name, image)
            record = {"video": f"video{v}", "frame": t, "image": name}
            if faces is not None:
                points = faces.tracks[t % len(faces.tracks)]
                landmarks = points.astype(float).round(3).tolist()
                record |= {"identity": f"video{v}", "landmarks": landmarks, "is_source": t == 0}
            lines.append(json.dumps(record) + "\n")
    atomic_write(out / "manifest.jsonl", "".join(lines))
    print(f"wrote {cfg.videos} clips of {cfg.frames} frames to {out}")
    return out


if __name__ == "__main__":
    main()
