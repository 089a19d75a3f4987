"""The mapping network f (METHOD.md section 4): landmark-image difference -> W+ displacement.

Reenactment predicts the driving frame's latent as ``w_s + f(L_d - L_s)``: the source's inverted latent plus a
displacement read off the difference of the two landmark images. The network is a plain CNN: eight blocks of
Conv + BatchNorm + LeakyReLU(0.01) with a 2x max-pool after all but the last, then a two-layer head
(Linear -> BatchNorm1d -> LeakyReLU -> Linear). At the thesis's 580 px input it has 18,890,624 parameters.

Saved as ``mapper.safetensors`` (weights, BatchNorm statistics included) + ``mapper.json`` (constructor
arguments and the landmark-image settings it was trained with); :func:`load_mapper` rebuilds it strictly.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from reenactment.faces.landmark_image import default_dot_diameter, default_line_width
from stylegan3.config import Bounds, check_settings
from stylegan3.io import (
    WeightsFileError,
    WeightsNotFoundError,
    brief,
    check_config_format,
    check_network_size,
    load_state_strict,
    read_json_config,
    read_safetensors,
    write_weights_folder,
)

FORMAT = "landmark-reenact/mapper"
FORMAT_VERSION = 1
WEIGHTS_FILE = "mapper.safetensors"
CONFIG_FILE = "mapper.json"
THESIS_CHANNELS = (16, 32, 64, 128, 256, 512, 512, 512)
STROKE_VALUE = 153  # grey level of the strokes in the training images (render_landmark_image's default)


class ConvBlock(nn.Module):
    """Conv (k x k, 'same' padding) -> BatchNorm2d -> LeakyReLU, then an optional 2x max-pool."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, negative_slope: float, pool: bool):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2)
        self.bn = nn.BatchNorm2d(out_channels)
        self.act = nn.LeakyReLU(negative_slope)
        self.pool = nn.MaxPool2d(2) if pool else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.act(self.bn(self.conv(x))))


@dataclass
class MapperArchitecture:
    """The mapping network's shape: ``MappingNetwork(num_ws=..., w_dim=..., **asdict(architecture))``."""

    image_size: int = 580  # landmark image side (thesis: 580)
    channels: list[int] = field(default_factory=lambda: list(THESIS_CHANNELS))  # conv block widths (8 in thesis)
    hidden: int = 768  # head hidden width


class MappingNetwork(nn.Module):
    """f: [N, 3, S, S] landmark-image difference in [-1, 1] -> [N, num_ws, w_dim] W+ displacement."""

    # Limits of a saved mapper's init_kwargs, checked before it is built (load_mapper); the thesis's: 580 px, 8
    # blocks of up to 512 channels, 768 hidden, 16 x 512 ws.
    INIT_LIMITS: ClassVar[dict] = {
        "image_size": Bounds(8, 4096, integer=True),
        "num_ws": Bounds(1, 64, integer=True),
        "w_dim": Bounds(1, 4096, integer=True),
        "channels[]": Bounds(1, 4096, integer=True),
        "hidden": Bounds(1, 16384, integer=True),
        "negative_slope": Bounds(-10, 10),
    }

    def __init__(
        self,
        image_size: int = 580,  # side S of the landmark images (the thesis: 580)
        num_ws: int = 16,  # latents in W+ (StyleGAN3 FFHQ 1024: 16)
        w_dim: int = 512,  # width of each latent
        channels: Sequence[int] = THESIS_CHANNELS,  # output channels of each conv block; the first is 5x5, the rest 3x3
        hidden: int = 768,  # width of the head's hidden layer
        negative_slope: float = 0.01,  # LeakyReLU slope, everywhere
    ):
        super().__init__()
        channels = tuple(int(c) for c in channels)
        if not channels:
            raise ValueError("channels must name at least one conv block")
        side = int(image_size)
        for _ in range(len(channels) - 1):  # a max-pool after every block but the last
            side //= 2
        if side < 1:
            need = 2 ** (len(channels) - 1)
            raise ValueError(
                f"image_size {image_size} is too small for {len(channels)} conv blocks: "
                f"{len(channels) - 1} max-pools need at least {need} px (use fewer blocks or a larger image)"
            )
        self.init_kwargs = {  # what rebuilds this network: saved with its weights
            "image_size": int(image_size),
            "num_ws": int(num_ws),
            "w_dim": int(w_dim),
            "channels": list(channels),
            "hidden": int(hidden),
            "negative_slope": float(negative_slope),
        }
        self.image_size, self.num_ws, self.w_dim = int(image_size), int(num_ws), int(w_dim)
        self.feature_side = side  # spatial side after the conv blocks (4 at 580)
        self.landmark_settings = landmark_settings(self.image_size)  # how its input images are drawn
        self.made_for: dict | None = None  # the generator it was trained for ({name, fingerprint}), where recorded

        blocks = []
        in_channels = 3
        for i, out_channels in enumerate(channels):
            kernel = 5 if i == 0 else 3
            blocks.append(ConvBlock(in_channels, out_channels, kernel, negative_slope, pool=i < len(channels) - 1))
            in_channels = out_channels
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(in_channels * side * side, hidden)
        self.fc_bn = nn.BatchNorm1d(hidden)
        self.fc_act = nn.LeakyReLU(negative_slope)
        self.out = nn.Linear(hidden, num_ws * w_dim)  # no activation: a displacement can have any sign and size

    def forward(self, landmark_delta: torch.Tensor) -> torch.Tensor:
        """[N, 3, S, S] float (L_d - L_s, in [-1, 1]) -> [N, num_ws, w_dim] displacement of the source's W+."""
        expected = (3, self.image_size, self.image_size)
        if landmark_delta.ndim != 4 or tuple(landmark_delta.shape[1:]) != expected:
            shape = tuple(landmark_delta.shape)
            raise ValueError(f"expected a landmark delta [N, 3, {self.image_size}, {self.image_size}], got {shape}")
        x = self.blocks(landmark_delta)
        x = self.fc_act(self.fc_bn(self.fc(x.flatten(1))))
        return self.out(x).view(-1, self.num_ws, self.w_dim)

    def predict(
        self, w_s: torch.Tensor, L_d: torch.Tensor | np.ndarray, L_s: torch.Tensor | np.ndarray
    ) -> torch.Tensor:
        """The driving frame's latent ``w_s + f(L_d - L_s)``.

        Args:
            w_s: [num_ws, w_dim] or [N, num_ws, w_dim] float, the source's W+ latent.
            L_d: driving landmark images, as accepted by :func:`landmark_delta` ([N, S, S, 3] uint8, ...).
            L_s: source landmark image(s), same forms; one image broadcasts over all N driving images.

        Returns:
            [N, num_ws, w_dim] float on ``w_s``'s device. Call it under ``torch.no_grad()`` and with the
            network in eval mode for inference (BatchNorm then uses its training statistics).
        """
        param = next(self.parameters())
        delta = landmark_delta(L_d, L_s, device=param.device).to(param.dtype)
        return w_s + self(delta).to(device=w_s.device, dtype=w_s.dtype)

    def extra_repr(self) -> str:
        return (
            f"image_size={self.image_size}, num_ws={self.num_ws}, w_dim={self.w_dim}, feature_side={self.feature_side}"
        )


def landmark_settings(image_size: int, frame_size: int = 1024) -> dict:
    """How the network's input images are drawn: ``image_size`` px images of landmarks given in an aligned
    ``frame_size`` px frame, with :func:`~reenactment.faces.landmark_image.render_landmark_image`'s default strokes."""
    return {
        "image_size": int(image_size),
        "frame_size": int(frame_size),
        "line_width": default_line_width(int(image_size)),
        "dot_diameter": default_dot_diameter(int(image_size)),
        "value": STROKE_VALUE,
    }


def _as_float_chw(images: torch.Tensor | np.ndarray, device: torch.device | str | None) -> torch.Tensor:
    """Landmark images -> float32 [..., 3, S, S] in [0, 1] (uint8 divided by 255; float taken as [0, 1])."""
    x = torch.as_tensor(images, device=device)
    if x.ndim < 3:
        raise ValueError(f"landmark images must be [..., S, S, 3] or [..., 3, S, S], got shape {tuple(x.shape)}")
    if x.dtype == torch.uint8:
        channels_last = x.shape[-1] == 3
        x = x.to(torch.float32) / 255
    elif x.is_floating_point():
        channels_last = x.shape[-1] == 3 and x.shape[-3] != 3
        x = x.to(torch.float32)
    else:
        raise ValueError(f"landmark images must be uint8 or float in [0, 1], got {x.dtype}")
    if channels_last:
        x = x.movedim(-1, -3)
    if x.shape[-3] != 3 or x.shape[-1] != x.shape[-2]:
        raise ValueError(f"landmark images must be square with 3 channels, got shape {tuple(images.shape)}")
    return x


def landmark_delta(
    L_d: torch.Tensor | np.ndarray, L_s: torch.Tensor | np.ndarray, device: torch.device | str | None = None
) -> torch.Tensor:
    """The network's input ``(L_d - L_s) / 255``: [N, 3, S, S] float32 in [-1, 1].

    Args:
        L_d: driving landmark images: uint8 [S, S, 3] or [N, S, S, 3] (as rendered), numpy or torch; or float
            tensors already in [0, 1], [N, 3, S, S] or [N, S, S, 3].
        L_s: source landmark image(s), the same forms; broadcast against ``L_d``.
        device: where to compute (default: where the inputs are). Moving uint8 images and converting there
            keeps host-to-device copies 4x smaller.
    """
    delta = _as_float_chw(L_d, device) - _as_float_chw(L_s, device)
    if delta.ndim == 3:
        delta = delta[None]
    if delta.ndim != 4:
        raise ValueError(f"landmark images must be one image or a batch, got a delta of shape {tuple(delta.shape)}")
    return delta


def save_mapper(
    model: nn.Module, directory: str | os.PathLike, extra: dict | None = None, *, frame_size: int | None = None
) -> Path:
    """Write ``mapper.safetensors`` + ``mapper.json`` into ``directory`` (created), each atomically.

    Args:
        model: a :class:`MappingNetwork` (a DistributedDataParallel wrapper is unwrapped).
        directory: the MAPPER_DIR.
        extra: JSON-serialisable information stored under ``"extra"`` (e.g. the epoch and the training losses).
        frame_size: side of the aligned frame the training landmarks were given in; default: the model's
            ``landmark_settings["frame_size"]`` (1024 unless it was loaded with another value).
    """
    model = getattr(model, "module", model)
    settings = dict(model.landmark_settings)
    if frame_size is not None:
        settings["frame_size"] = int(frame_size)
    config = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "init_kwargs": model.init_kwargs,
        "landmarks": settings,
        "extra": extra or {},
    }
    return write_weights_folder(directory, model, config, WEIGHTS_FILE, CONFIG_FILE)


def _mapper_dir(path: str | os.PathLike) -> Path:
    """A MAPPER_DIR given as the folder or as either of its two files."""
    path = Path(path)
    return path.parent if path.name in (CONFIG_FILE, WEIGHTS_FILE) else path


def read_mapper_config(directory: str | os.PathLike) -> dict:
    """The ``mapper.json`` of a MAPPER_DIR (``format``, ``init_kwargs``, ``landmarks``, ``extra``)."""
    directory = _mapper_dir(directory)
    config_path, weights_path = directory / CONFIG_FILE, directory / WEIGHTS_FILE
    missing = [p.name for p in (config_path, weights_path) if not p.is_file()]
    if missing:
        hint = ""
        if (directory / "latest.json").is_file():
            latest = json.loads((directory / "latest.json").read_text())["checkpoint"]
            hint = f" (training has not finished: the last finished epoch is in {directory / latest})"
        raise WeightsNotFoundError(
            f"{directory}: missing {' and '.join(missing)}; a mapper folder (written by train_mapper.py) "
            f"holds {CONFIG_FILE} and {WEIGHTS_FILE}{hint}"
        )
    config = read_json_config(config_path)
    return check_config_format(config, config_path, FORMAT, FORMAT_VERSION, "a mapping-network config")


def load_mapper(directory: str | os.PathLike, device: str | torch.device = "cpu") -> MappingNetwork:
    """Rebuild a saved mapping network (strict: every tensor present with its shape), in eval mode on ``device``.

    ``directory`` is a MAPPER_DIR (a train_mapper.py run folder or one of its ``checkpoints/epoch_NNN``), or either
    of its two files. Its ``landmark_settings`` (image size, the frame size of the training landmarks, stroke
    sizes) come from the saved config.
    """
    directory = _mapper_dir(directory)
    config = read_mapper_config(directory)
    try:
        check_settings(config["init_kwargs"], MappingNetwork.INIT_LIMITS, max_items=32)
        check_network_size(lambda: MappingNetwork(**config["init_kwargs"]))
        model = MappingNetwork(**config["init_kwargs"])
        model.landmark_settings.update(config.get("landmarks", {}))
        made_for = (config.get("extra") or {}).get("generator")  # {name, fingerprint} where recorded
        model.made_for = made_for if isinstance(made_for, dict) else None
    except Exception as err:  # a missing key, a value out of range or one the constructor rejects
        problem = f"not a mapping network this code can build ({type(err).__name__}: {brief(str(err), 300)})"
        raise WeightsFileError(directory / CONFIG_FILE, problem) from err
    weights = directory / WEIGHTS_FILE
    load_state_strict(model, read_safetensors(weights), str(weights))
    return model.to(device).eval()
