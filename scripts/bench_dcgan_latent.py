"""Which latent of ``digiface-dcgan-64`` to invert: z, the first block's map before its ReLU, or after it (W+).

Photos aligned with the generator's framing are inverted with MSE alone and Adam for ``steps`` steps, from a random
z or from the mean of the map; the PSNR of each reconstruction is printed.

    python -m scripts.bench_dcgan_latent > docs/bench/digiface_latent.log
"""

from __future__ import annotations

import glob
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

import stylegan3
from inversion.targets import to_tensor
from reenactment.faces.align import load_target
from stylegan3.config import parse_cli


@dataclass
class BenchDcganLatentConfig:
    network: str = "digiface-dcgan-64"  # a DCGAN generator (mapping = its first block)
    photos: str = "../shared/samples/images/london_0[026][134]_neutral.jpg"  # glob: London 003, 021, 024, 061
    steps: int = 400  # Adam steps per run
    lrs: list[float] = field(default_factory=lambda: [0.01, 0.02, 0.05])  # learning rates tried for W+


def _psnr(image: torch.Tensor, target: torch.Tensor) -> list[float]:
    return (10 * torch.log10(4 / (image - target).square().flatten(1).mean(1))).tolist()  # [-1, 1]: peak^2 = 4


def _run(param: torch.Tensor, render: Callable[[], torch.Tensor], target: torch.Tensor, steps: int, lr: float):
    param.requires_grad_(True)
    optimizer = torch.optim.Adam([param], lr=lr)
    start = time.perf_counter()
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        (render() - target).square().mean().backward()
        optimizer.step()
    with torch.no_grad():
        psnr = _psnr(render(), target)
    return psnr, (time.perf_counter() - start) / steps / len(target)


def main(argv: list[str] | None = None) -> None:
    cfg = parse_cli(BenchDcganLatentConfig, argv, __doc__)
    try:
        G = stylegan3.load(cfg.network)
    except (ValueError, OSError) as err:
        raise SystemExit(f"error: {err}") from None
    paths = sorted(glob.glob(cfg.photos))
    if not paths:
        raise SystemExit(f"error: no photo matches {cfg.photos}")
    target = torch.cat([to_tensor(load_target(p, G.img_resolution, framing=G.framing)) for p in paths])
    n = len(paths)
    print(f"latent choice for {cfg.network}: {n} photos ({', '.join(p.rsplit('/', 1)[-1] for p in paths)}), MSE, "
          f"Adam, {cfg.steps} steps, torch {torch.__version__}")  # fmt: skip
    first, head = G.mapping.net[:2], G.mapping.net  # the first block without / with its ReLU
    rows = []
    z = torch.randn(n, G.z_dim, generator=torch.Generator().manual_seed(0))
    rows.append(("z", "random z", 0.02, *_run(z, lambda: G.synthesis(G.mapping(z)), target, cfg.steps, 0.02)))
    with torch.no_grad():
        zs = torch.from_numpy(np.random.RandomState(123).randn(10000, G.z_dim).astype(np.float32))
        pre_mean = first(zs.reshape(-1, G.z_dim, 1, 1)).mean(0)
    pre = pre_mean[None].repeat(n, 1, 1, 1)
    render_pre = lambda: G.synthesis(head[-1](pre).flatten(2).transpose(1, 2))  # noqa: E731
    rows.append(("pre-ReLU map", "its mean", 0.02, *_run(pre, render_pre, target, cfg.steps, 0.02)))
    for lr in cfg.lrs:
        w = G.mean_w()[None].repeat(n, 1, 1)
        rows.append(("W+ (post-ReLU map)", "mean W+", lr, *_run(w, lambda w=w: G.synthesis(w), target, cfg.steps, lr)))
    print("| latent | start | lr | PSNR (dB) per photo | ms/step/image |")
    print("| --- | --- | --- | --- | --- |")
    for name, start, lr, psnr, seconds in rows:
        print(f"| {name} | {start} | {lr} | {', '.join(f'{p:.2f}' for p in psnr)} | {seconds * 1000:.1f} |")


if __name__ == "__main__":
    main()
