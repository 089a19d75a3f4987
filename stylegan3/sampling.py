"""Seeds to latents to images, and image grids."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

MAX_SEED = 2**32 - 1  # np.random.RandomState's seeds
MAX_SEEDS = 100_000  # images one seed list may ask for


def parse_seeds(text: str | int) -> list[int]:
    """``"0-3,10"`` -> [0, 1, 2, 3, 10]; seeds are integers from 0 to MAX_SEED, at most MAX_SEEDS of them, ranges
    ascending. ValueError naming the problem otherwise (before anything is allocated)."""
    ranges: list[tuple[int, int]] = []
    for part in str(text).split(","):
        lo, sep, hi = part.strip().partition("-")
        if not lo.isascii() or not lo.isdigit() or (sep and not (hi.isascii() and hi.isdigit())) or len(part) > 25:
            raise ValueError(f"seeds: bad seed list {text[:40]!r}: use non-negative integers and ranges like 0-7,12")
        first, last = int(lo), int(hi) if sep else int(lo)
        if last < first:
            raise ValueError(f"seeds: the range {part.strip()} runs backwards: write it {last}-{first}")
        if last > MAX_SEED:
            raise ValueError(f"seeds: {last} is too large: seeds run from 0 to {MAX_SEED}")
        ranges.append((first, last))
    count = sum(last - first + 1 for first, last in ranges)
    if count > MAX_SEEDS:
        raise ValueError(f"seeds: {text[:40]!r} asks for {count:,} images: at most {MAX_SEEDS:,} per run")
    return [seed for first, last in ranges for seed in range(first, last + 1)]


def z_from_seeds(seeds: list[int], z_dim: int) -> torch.Tensor:
    """One z per seed from ``np.random.RandomState(seed)``, drawn on the CPU: [N, z_dim] float32."""
    return torch.from_numpy(np.stack([np.random.RandomState(s).randn(z_dim) for s in seeds]).astype(np.float32))


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """[N, 3, H, W] float in [-1, 1] -> [N, H, W, 3] uint8: clamped, then ``round((x + 1) * 127.5)`` (ties to
    even), so -1 -> 0, 0 -> 128 (127.5 rounds to even), 1 -> 255; the one conversion every image output uses."""
    values = ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round()
    return values.to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


@torch.no_grad()
def generate(
    G: nn.Module,
    seeds: list[int],
    truncation_psi: float = 1.0,
    truncation_cutoff: int | None = None,
    noise_mode: str = "const",
    batch_size: int = 4,
) -> np.ndarray:
    """Images for ``seeds``: [N, H, W, 3] uint8."""
    device = next(G.parameters()).device
    z = z_from_seeds(seeds, G.z_dim)
    out = []
    for start in range(0, len(seeds), batch_size):
        ws = G.mapping(z[start : start + batch_size].to(device), None, truncation_psi, truncation_cutoff)
        out.append(to_uint8(G.synthesis(ws, noise_mode=noise_mode)))
    return np.concatenate(out)


def make_grid(images: np.ndarray, columns: int | None = None) -> np.ndarray:
    """[N, H, W, 3] -> one [rows*H, columns*W, 3] image (unused cells black)."""
    n, h, w, c = images.shape
    columns = columns or int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / columns))
    grid = np.zeros([rows * h, columns * w, c], dtype=images.dtype)
    for i, img in enumerate(images):
        r, col = divmod(i, columns)
        grid[r * h : (r + 1) * h, col * w : (col + 1) * w] = img
    return grid


def synthesize(G: nn.Module, w_plus: torch.Tensor, mixed_precision: bool = False) -> torch.Tensor:
    """G(w) for inversion: [N, num_ws, w_dim] -> [N, 3, H, W] float32 (constant noise for StyleGAN2)."""
    kwargs = {"force_fp32": not mixed_precision}
    if getattr(G, "architecture", "") == "stylegan2":
        kwargs["noise_mode"] = "const"
    return G.synthesis(w_plus, **kwargs).float()
