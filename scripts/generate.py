"""Generate images from seeds with a StyleGAN2/3 generator.

python scripts/generate.py network=stylegan3-r-ffhq-1024x1024 seeds=0-7 truncation_psi=0.7
python scripts/generate.py network=random seeds=0-3 grid=false out=out/faces
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch
from PIL import Image

import stylegan3
from stylegan3 import WeightsFileError, WeightsNotFoundError
from stylegan3.bench import PLANS, build_plan
from stylegan3.config import NOT_EMPTY, Bounds, exit_with_error, parse_cli, save_config
from stylegan3.networks_stylegan2 import NOISE_MODES
from stylegan3.runtime import resolve_impl
from stylegan3.sampling import generate, make_grid, parse_seeds


@dataclass
class GenerateConfig:
    network: str = "random"  # .pkl, our weights folder, a known name, or "random" (untrained, for trying things out)
    seeds: str = "0-7"  # seeds, e.g. "0-7" or "1,5,9"
    truncation_psi: float = 0.7  # 1 = no truncation
    truncation_cutoff: int | None = None  # truncate only the first N ws (None = all)
    noise_mode: str = "const"  # StyleGAN2 noise: random, const or none
    grid: bool = True  # one grid image (grid.png) instead of one file per seed
    out: str = "out/generate"  # output folder
    device: str = "cpu"  # cpu, cuda, cuda:1, mps
    impl: str = "auto"  # generator ops: auto (triton on CUDA after a passed trial, else fast), fast, reference, triton
    batch_size: int = 4  # images per forward pass
    random_plan: str = "t"  # layer plan of network=random: t, r or sg2
    random_resolution: int = 128  # resolution of network=random
    LIMITS: ClassVar[dict] = {
        "truncation_psi": Bounds(-10, 10),
        "truncation_cutoff": Bounds(0, 64),
        "noise_mode": NOISE_MODES,
        "out": NOT_EMPTY,
        "batch_size": Bounds(1, 1024),
        "random_plan": tuple(PLANS),
        "random_resolution": Bounds(4, 4096),
    }


def load_generator(cfg: GenerateConfig) -> torch.nn.Module:
    G = _build_generator(cfg)
    G.set_impl(resolve_impl(cfg.impl, torch.device(cfg.device), G))
    return G


def _build_generator(cfg: GenerateConfig) -> torch.nn.Module:
    if cfg.network != "random":
        return stylegan3.load(cfg.network, device=cfg.device)
    print(
        f"network=random: an UNTRAINED {cfg.random_plan.upper()} generator at {cfg.random_resolution} px with "
        "random weights (images are noise patterns, not faces); pass network=PATH_OR_NAME for real weights"
    )
    torch.manual_seed(0)
    try:
        return build_plan(cfg.random_plan, cfg.random_resolution, w_dim=512).to(cfg.device)
    except ValueError as err:  # the settings it was built from are the user's keys, not the network's
        raise ValueError(f"random_plan={cfg.random_plan} random_resolution={cfg.random_resolution}: {err}") from None


def main(argv: list[str] | None = None) -> Path:
    cfg = parse_cli(GenerateConfig, argv, __doc__)
    try:
        seeds = parse_seeds(cfg.seeds)
        G = load_generator(cfg)
    except (WeightsNotFoundError, WeightsFileError, ValueError) as err:  # missing or unusable weights, bad seeds
        exit_with_error(err)
    images = generate(G, seeds, cfg.truncation_psi, cfg.truncation_cutoff, cfg.noise_mode, cfg.batch_size)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml")
    if cfg.grid:
        Image.fromarray(make_grid(images)).save(out / "grid.png")
    else:
        for seed, img in zip(seeds, images):
            Image.fromarray(img).save(out / f"seed{seed:04d}.png")
    print(f"wrote {len(seeds)} images ({G.img_resolution} px) to {out}")
    return out


if __name__ == "__main__":
    main()
