"""Where a process runs: its device and its place in a ``torchrun`` job (the one definition every script uses)."""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch


@dataclass(frozen=True)
class DistEnv:
    """Where this process sits in a torchrun job: (0, 1, 0) when run directly."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> DistEnv:
        """From torchrun's ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` (defaults when they are not set)."""
        env = os.environ if environ is None else environ
        return cls(int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1)), int(env.get("LOCAL_RANK", 0)))

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto`` -> ``cuda:<local_rank>`` when CUDA is available, else ``cpu``; ``cuda`` -> ``cuda:<local_rank>``
    (under torchrun each rank takes its own GPU, not GPU 0); anything else as given (``cpu``, ``cuda:1``, ``mps``);
    an unknown name is a ValueError naming it."""
    if name == "auto":
        return torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise ValueError(f"unknown device {name!r} (use auto, cpu, cuda, cuda:N or mps)") from err
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local_rank)
    return device


def resolve_impl(impl: str, device: torch.device, generator: torch.nn.Module | None = None) -> str:
    """The generator ops for the config key ``impl`` on ``device``: ``fast`` and ``reference`` as given; ``auto`` ->
    ``triton`` on CUDA when Triton imports and its kernels pass their trial there, else ``fast``; ``triton`` when they
    pass it. The trial (:func:`stylegan3.triton_ops.trial`, once per process, device and layer kind) runs every layer
    kind of ``generator`` (None: those of the StyleGAN3 T and R plans) forward and backward against the fast path. A
    failed trial gives ``fast`` under ``auto``, with one log line naming why; under ``triton`` that line is a
    ValueError (as is ``triton`` where it cannot run, and an unknown name)."""
    from .layers import IMPLS

    if impl != "auto" and impl not in IMPLS:
        raise ValueError(f"impl must be one of auto, {', '.join(IMPLS)}, not {impl!r}")
    if impl in ("fast", "reference") or (impl == "auto" and device.type != "cuda"):
        return "fast" if impl == "auto" else impl
    from . import triton_ops

    reason = triton_ops.unavailable_reason(device)
    if reason is None:
        reason = triton_ops.trial(_trial_plans() if generator is None else generator, device)
    if reason is None:
        return "triton"
    if impl == "triton":
        raise ValueError(f"impl=triton cannot run on {device}: {reason}")
    message = f"impl=auto: the Triton kernels are not used on {device} ({reason}); using impl=fast"
    if message not in _SAID:
        _SAID.add(message)
        logging.getLogger(__name__).warning(message)
    return "fast"


_SAID: set[str] = set()  # log lines already written by this process


@functools.cache
def _trial_plans() -> torch.nn.Module:
    """The layers of the StyleGAN3 T and R plans at 1024 px (one channel each: only their filters matter)."""
    from .bench import build_plan

    return torch.nn.ModuleList([build_plan(config, 1024, w_dim=4, channel_max=1) for config in ("t", "r")])


def init_distributed(device: torch.device, env: DistEnv) -> None:
    """Make ``device`` this process's current CUDA device and, in a torchrun job, join the process group on it
    (NCCL bound to the rank's GPU through ``device_id``; gloo on the CPU). Nothing else when run directly."""
    if device.type == "cuda":
        torch.cuda.set_device(device)
        # Inversion, training and rendering run the same shapes over and over: let cuDNN time its kernels once.
        torch.backends.cudnn.benchmark = True
    if env.world > 1:
        import torch.distributed as dist

        if device.type == "cuda":
            dist.init_process_group("nccl", device_id=device)
        else:
            dist.init_process_group("gloo")


def tensorboard_writer(folder: Path | str, fallback: str):
    """A TensorBoard ``SummaryWriter`` on ``folder`` when TensorBoard is installed, else None (said once in the
    log, naming ``fallback``: where the run still logs)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        logging.getLogger(__name__).info("TensorBoard is not installed: logging to %s only", fallback)
        return None
    return SummaryWriter(str(folder))
