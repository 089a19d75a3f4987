"""Layer plans of NVIDIA's released networks, with random weights, for benchmarks and tests."""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Callable

import torch
from torch import nn

from .io import build

# Settings of the FFHQ configs in NVIDIA's training script (R doubles T's channel base and max).
PLANS: dict[str, tuple[str, dict]] = {
    "t": ("stylegan3", {"channel_base": 32768, "channel_max": 512}),
    "r": ("stylegan3", {"channel_base": 65536, "channel_max": 1024, "conv_kernel": 1, "use_radial_filters": True}),
    "sg2": ("stylegan2", {"channel_base": 32768, "channel_max": 512, "conv_clamp": 256}),
}


def build_plan(config: str, resolution: int, w_dim: int = 512, channel_max: int | None = None) -> nn.Module:
    """A randomly initialised generator with the layer plan of ``config`` ("t", "r", "sg2").

    At 256 px the StyleGAN3 plans use half the channel base, as NVIDIA's 256 px models do. ``channel_max``: at most
    this many channels per layer (smoke runs of the benchmarks; None: the plan's own widths).
    """
    architecture, settings = PLANS[config]
    settings = dict(settings)
    if architecture == "stylegan3" and resolution <= 256:
        settings["channel_base"] //= 2
    if channel_max is not None:
        settings["channel_max"] = min(settings["channel_max"], channel_max)
    kwargs = {"z_dim": w_dim, "c_dim": 0, "w_dim": w_dim, "img_resolution": resolution, "img_channels": 3, **settings}
    return build(architecture, kwargs).eval().requires_grad_(False)


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def synchronize(device: torch.device) -> None:
    """Wait for ``device``'s queued work (a no-op off CUDA): the benchmarked device, not the current one (they
    differ for cuda:1)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_and_peak(fn: Callable[[], None], device: torch.device) -> tuple[float, int]:
    """Seconds ``fn()`` takes and the peak memory it adds, in bytes: on CUDA ``max_memory_allocated`` above what
    was allocated before; on CPU the process's peak resident size above its size before (so run each
    measurement in a fresh process)."""

    def sync() -> None:
        synchronize(device)

    sync()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    else:
        base = _rss_bytes()
    start = time.perf_counter()
    fn()
    sync()
    seconds = time.perf_counter() - start
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) - base
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
    return seconds, max(peak, 0)
