"""An encoder start for inversion: a small ResNet that reads a W+ latent off an image (ARCHITECTURE.md decision 9).

It is trained on the generator's own samples (``inversion.encoder_training``, pairs w -> G(w); no face dataset)
and predicts the offset of an image's W+ from the mean w; its last layer starts at zero, so an untrained encoder
gives exactly the thesis's mean-w start. Saved as ``encoder.safetensors`` + ``encoder.json`` (constructor
arguments, training settings and the fingerprint of the generator it was trained for): :func:`load_encoder`
refuses it for any other generator.

Where an inversion starts is the config key ``init`` (:class:`InitOptions`): ``mean`` (the thesis, default) or
``encoder:DIR``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from stylegan3.config import Bounds, check_settings
from stylegan3.io import (
    WeightsFileError,
    WeightsNotFoundError,
    brief,
    check_config_format,
    check_network_size,
    load_state_strict,
    network_fingerprint,
    read_json_config,
    read_safetensors,
    write_weights_folder,
)

FORMAT = "landmark-reenact/encoder"
FORMAT_VERSION = 1
WEIGHTS_FILE = "encoder.safetensors"
CONFIG_FILE = "encoder.json"
ENCODER_PREFIX = "encoder:"


class EncoderMismatchError(WeightsFileError):
    """An encoder trained for another generator (its fingerprint differs): one line naming both networks."""


@dataclass
class EncoderArchitecture:
    """The encoder's shape: ``LatentEncoder(num_ws=..., w_dim=..., **asdict(architecture))``."""

    input_size: int = 256  # images are area-resized to this side first
    channels: list[int] = field(default_factory=lambda: [32, 64, 128, 256, 256, 256])  # one stride-2 stage each
    blocks: int = 1  # residual blocks per stage (after its stride-2 entry)
    hidden: int = 512  # width of the head's hidden layer


class ResidualBlock(nn.Module):
    """x + conv(act(norm(conv(act(norm(x)))))) at a fixed width (GroupNorm: per image, batch-independent)."""

    def __init__(self, channels: int):
        super().__init__()
        groups = min(8, channels)
        self.norm1, self.conv1 = nn.GroupNorm(groups, channels), nn.Conv2d(channels, channels, 3, padding=1)
        self.norm2, self.conv2 = nn.GroupNorm(groups, channels), nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv1(F.leaky_relu(self.norm1(x), 0.2))
        return x + self.conv2(F.leaky_relu(self.norm2(y), 0.2))


class LatentEncoder(nn.Module):
    """E: [N, 3, H, W] image in [-1, 1] -> [N, num_ws, w_dim] W+ latent ``w_mean + offset(image)``."""

    # Limits of a saved encoder's init_kwargs, checked before it is built (read_encoder).
    INIT_LIMITS: ClassVar[dict] = {
        "num_ws": Bounds(1, 64, integer=True),
        "w_dim": Bounds(1, 4096, integer=True),
        "input_size": Bounds(8, 4096, integer=True),
        "channels[]": Bounds(1, 4096, integer=True),
        "blocks": Bounds(0, 64, integer=True),
        "hidden": Bounds(1, 16384, integer=True),
    }

    def __init__(
        self,
        num_ws: int = 16,  # latents in W+ (StyleGAN3 FFHQ 1024: 16)
        w_dim: int = 512,  # width of each latent
        input_size: int = 256,  # side the image is area-resized to
        channels: Sequence[int] = (32, 64, 128, 256, 256, 256),  # width of each stride-2 stage
        blocks: int = 1,  # residual blocks per stage
        hidden: int = 512,  # width of the head's hidden layer
    ):
        super().__init__()
        channels = tuple(int(c) for c in channels)
        side = int(input_size) // 2 ** len(channels)
        if not channels or side < 1 or int(input_size) % 2 ** len(channels):
            raise ValueError(f"input_size {input_size} must be a multiple of 2^{len(channels)} (one per stage)")
        self.init_kwargs = {  # what rebuilds this network: saved with its weights
            "num_ws": int(num_ws),
            "w_dim": int(w_dim),
            "input_size": int(input_size),
            "channels": list(channels),
            "blocks": int(blocks),
            "hidden": int(hidden),
        }
        self.num_ws, self.w_dim, self.input_size, self.feature_side = int(num_ws), int(w_dim), int(input_size), side
        stages: list[nn.Module] = []
        width = 3
        for out in channels:
            stages.append(nn.Conv2d(width, out, 3, stride=2, padding=1))
            stages += [ResidualBlock(out) for _ in range(int(blocks))]
            width = out
        self.stages = nn.Sequential(*stages)
        self.fc = nn.Linear(width * side * side, int(hidden))
        self.out = nn.Linear(int(hidden), self.num_ws * self.w_dim)
        nn.init.zeros_(self.out.weight)  # offset 0 at the start: an untrained encoder is the mean-w start
        nn.init.zeros_(self.out.bias)
        self.register_buffer("w_mean", torch.zeros(self.num_ws, self.w_dim))  # the generator's mean w, set by training

    def offset(self, images: torch.Tensor) -> torch.Tensor:
        """[N, 3, H, W] in [-1, 1] (H = W, any multiple of ``input_size`` or larger) -> [N, num_ws, w_dim]."""
        if images.ndim != 4 or images.shape[1] != 3 or images.shape[-1] != images.shape[-2]:
            raise ValueError(f"the encoder takes square RGB images [N, 3, S, S], got {tuple(images.shape)}")
        x = images.float()
        if x.shape[-1] != self.input_size:
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="area")
        x = self.stages(x).flatten(1)
        return self.out(F.leaky_relu(self.fc(x), 0.2)).view(-1, self.num_ws, self.w_dim)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """[N, 3, S, S] in [-1, 1] -> W+ [N, num_ws, w_dim] float32."""
        return self.w_mean + self.offset(images)

    @torch.no_grad()
    def start(self, targets: torch.Tensor) -> torch.Tensor:
        """Start latents for inversion targets [N, 3, S, S] in [-1, 1]: [N, num_ws, w_dim] float32 on their device.
        Image by image, so an image's start does not depend on the rest of its batch (float32 summation order)."""
        return torch.cat([self(targets[i : i + 1]) for i in range(targets.shape[0])]).to(targets.device)

    def extra_repr(self) -> str:
        return f"num_ws={self.num_ws}, w_dim={self.w_dim}, input_size={self.input_size}"


def generator_record(G: nn.Module, name: str | None = None) -> dict:
    """How ``encoder.json`` names the generator an encoder is made for: its fingerprint and shape (and its name)."""
    return {
        "name": name,
        "fingerprint": network_fingerprint(G),
        "architecture": getattr(G, "architecture", None),
        "img_resolution": int(G.img_resolution),
        "num_ws": int(G.num_ws),
        "w_dim": int(G.w_dim),
    }


def save_encoder(encoder: LatentEncoder, directory: str | os.PathLike, generator: dict, training: dict) -> Path:
    """Write ``encoder.safetensors`` + ``encoder.json`` (``generator``: :func:`generator_record`; ``training``: the
    settings and results) into ``directory``, each atomically (the weights first, then the config)."""
    config = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "init_kwargs": encoder.init_kwargs,
        "generator": generator,
        "training": training,
    }
    return write_weights_folder(directory, encoder, config, WEIGHTS_FILE, CONFIG_FILE)


def _encoder_dir(path: str | os.PathLike) -> Path:
    path = Path(path)
    return path.parent if path.name in (CONFIG_FILE, WEIGHTS_FILE) else path


def read_encoder(directory: str | os.PathLike) -> tuple[LatentEncoder, dict]:
    """The saved encoder (strictly rebuilt, eval mode, CPU) and its ``encoder.json``, with no generator check.
    A missing file is WeightsNotFoundError, an unusable one WeightsFileError, each naming the file."""
    directory = _encoder_dir(directory)
    config_path, weights_path = directory / CONFIG_FILE, directory / WEIGHTS_FILE
    missing = [p.name for p in (config_path, weights_path) if not p.is_file()]
    if missing:
        hint = " (training has not finished)" if (directory / "training_state.pt").is_file() else ""
        raise WeightsNotFoundError(
            f"encoder {directory}: missing {' and '.join(missing)}; an encoder folder (written by "
            f"train_encoder.py) holds {CONFIG_FILE} and {WEIGHTS_FILE}{hint}"
        )
    config = read_json_config(config_path)
    check_config_format(config, config_path, FORMAT, FORMAT_VERSION, "an encoder config")
    try:
        check_settings(config["init_kwargs"], LatentEncoder.INIT_LIMITS, max_items=32)
        check_network_size(lambda: LatentEncoder(**config["init_kwargs"]))
        encoder = LatentEncoder(**config["init_kwargs"])
    except Exception as err:  # a missing key, a value out of range or one the constructor rejects
        problem = f"not an encoder this code can build ({type(err).__name__}: {brief(str(err), 300)})"
        raise WeightsFileError(config_path, problem) from err
    load_state_strict(encoder, read_safetensors(weights_path), str(weights_path))
    return encoder.eval().requires_grad_(False), config


def load_encoder(directory: str | os.PathLike, G: nn.Module, network: str | None = None) -> LatentEncoder:
    """The encoder saved in ``directory``, on G's device, checked to be made for ``G`` (named ``network`` in
    messages): EncoderMismatchError otherwise, naming both generators."""
    encoder, config = read_encoder(directory)
    made_for = config.get("generator") or {}
    fingerprint = network_fingerprint(G)
    if made_for.get("fingerprint") != fingerprint:
        theirs = made_for.get("name") or "another generator"
        mine = network or "this generator"
        raise EncoderMismatchError(
            _encoder_dir(directory) / CONFIG_FILE,
            f"the encoder was trained for {theirs} (fingerprint {str(made_for.get('fingerprint'))[:12]}), "
            f"not for {mine} (fingerprint {fingerprint[:12]}); train one for it with train_encoder.py",
        )
    return encoder.to(next(G.parameters()).device)


def encoder_fingerprint(directory: str | os.PathLike) -> str:
    """The fingerprint of the encoder saved in ``directory`` (its weights and shape), with no generator needed."""
    return network_fingerprint(read_encoder(directory)[0])


@dataclass
class InitOptions:
    """Where an inversion starts (config key ``init``): ``mean`` (the thesis's mean w) or ``encoder:DIR``."""

    init: str = "mean"  # mean (the thesis) or encoder:DIR (a train_encoder.py folder made for this generator)

    def encoder_dir(self) -> Path | None:
        """The encoder folder of ``init=encoder:DIR`` (None for ``mean``); ValueError for anything else."""
        if self.init == "mean":
            return None
        if self.init.startswith(ENCODER_PREFIX) and self.init[len(ENCODER_PREFIX) :]:
            return Path(self.init[len(ENCODER_PREFIX) :]).expanduser()
        raise ValueError(f"init must be 'mean' or 'encoder:DIR', got {self.init!r}")

    def load(self, G: nn.Module, network: str | None = None) -> LatentEncoder | None:
        """The encoder (checked against ``G``, on its device), or None for the mean-w start."""
        folder = self.encoder_dir()
        return None if folder is None else load_encoder(folder, G, network)

    def fingerprint(self) -> str | None:
        """The encoder's fingerprint (None for ``mean``): what a result made with this start depends on."""
        folder = self.encoder_dir()
        return None if folder is None else encoder_fingerprint(folder)


def start_latents(encoder: LatentEncoder | None, targets: torch.Tensor) -> torch.Tensor | None:
    """The start of inverting ``targets`` [N, 3, S, S] in [-1, 1]: the encoder's W+ [N, num_ws, w_dim], or None
    (``invert`` then starts from the mean w) without an encoder."""
    return None if encoder is None else encoder.start(targets)
