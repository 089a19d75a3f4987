"""LPIPS perceptual distance (Zhang et al., 2018), AlexNet trunk, as the thesis's inversion loss uses it.

The network and its calibrated linear heads come from the ``lpips`` package (the heads ship inside its
wheel, ``lpips/weights/v0.1/alex.pth``). The AlexNet trunk's ImageNet weights are torchvision's
``alexnet-owt-7be5be79.pth``, resolved offline-first: torch hub's checkpoint folder (where torchvision
would have cached it), then ``$REENACT_CACHE/torchvision/``, downloaded there only when allowed.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import lpips
import torch
from torch import nn

from stylegan3 import WeightsFileError, WeightsNotFoundError, fetch_weights
from stylegan3.io import read_state_dict

ALEXNET_FILE = "alexnet-owt-7be5be79.pth"
ALEXNET_URL = f"https://download.pytorch.org/models/{ALEXNET_FILE}"
LPIPS_VERSION = "0.1"


def resolve_alexnet(path: str | os.PathLike | None = None) -> Path:
    """Path of torchvision's AlexNet ImageNet weights: ``path`` if given, else torch hub's cache, else ours.

    Raises ``stylegan3.WeightsNotFoundError`` naming the file and where to put it.
    """
    if path is None:
        hub_file = Path(torch.hub.get_dir()) / "checkpoints" / ALEXNET_FILE
        if hub_file.is_file():
            return hub_file
    return fetch_weights(
        ALEXNET_FILE, "torchvision", url=ALEXNET_URL, path=path, what="torchvision AlexNet weights (LPIPS backbone)"
    )


def _copy_checked(target: dict[str, torch.Tensor], source: dict[str, torch.Tensor], names: dict[str, str], where: str):
    """Copy ``source[names[k]]`` into ``target[k]`` for every k; missing or mis-shaped entries are errors."""
    missing = [f"{src} (for {dst})" for dst, src in names.items() if src not in source]
    misshaped = [
        f"{src} {tuple(source[src].shape)} (expected {tuple(target[dst].shape)})"
        for dst, src in names.items()
        if src in source and source[src].shape != target[dst].shape
    ]
    if missing or misshaped:
        raise WeightsFileError(where, f"weights do not match the network; missing: {missing}; mis-shaped: {misshaped}")
    with torch.no_grad():
        for dst, src in names.items():
            target[dst].copy_(source[src])


def _load_alexnet_trunk(trunk: nn.Module, file: Path) -> None:
    """Copy torchvision's ``features.<i>.*`` into lpips' ``slice<s>.<i>.*`` (the slices keep torchvision's indices)."""
    state = read_state_dict(file)
    own = trunk.state_dict()
    names = {k: "features." + k.split(".", 1)[1] for k in own}  # slice2.3.weight -> features.3.weight
    unexpected = sorted(k for k in state if k.startswith("features.") and k not in names.values())
    if unexpected:
        raise WeightsFileError(file, f"not torchvision's AlexNet; unexpected entries {unexpected}")
    _copy_checked(own, state, names, str(file))


def _load_heads(model: lpips.LPIPS) -> None:
    """The calibrated 1x1 heads ``lin0`` .. ``lin4`` from the file shipped inside the lpips wheel, strictly."""
    file = Path(lpips.__file__).parent / "weights" / f"v{LPIPS_VERSION}" / "alex.pth"
    if not file.is_file():
        raise WeightsNotFoundError(f"LPIPS linear-head weights not found at {file}; reinstall the lpips package")
    state = read_state_dict(file)
    own = {k: v for k, v in model.state_dict().items() if k.startswith("lin") and not k.startswith("lins.")}
    unexpected = sorted(state.keys() - own.keys())
    if unexpected:
        raise WeightsFileError(file, f"unexpected entries {unexpected}")
    _copy_checked(own, state, {k: k for k in own}, str(file))


class LPIPS(nn.Module):
    """LPIPS distance with the AlexNet trunk (lpips v0.1): two [N, 3, H, W] batches in [-1, 1] -> [N].

    Frozen and always in eval mode (``train()`` is a no-op, so the heads' dropout stays off); gradients
    flow to the inputs. ``_random_backbone=True`` keeps a randomly initialised trunk and needs no file:
    for tests only, its distances mean nothing.
    """

    def __init__(
        self,
        alexnet_path: str | os.PathLike | None = None,  # torchvision's alexnet-owt-7be5be79.pth; None: the caches
        device: torch.device | str = "cpu",
        *,
        _random_backbone: bool = False,  # tests only: skip the ImageNet trunk weights
    ) -> None:
        super().__init__()
        with warnings.catch_warnings():  # lpips passes torchvision's deprecated `pretrained=` argument
            warnings.simplefilter("ignore", UserWarning)
            self.net = lpips.LPIPS(
                net="alex", version=LPIPS_VERSION, pretrained=False, pnet_rand=True, verbose=False, eval_mode=True
            )
        _load_heads(self.net)
        if not _random_backbone:
            _load_alexnet_trunk(self.net.net, resolve_alexnet(alexnet_path))
        self.net.requires_grad_(False)
        super().train(False)
        self.to(device)

    def train(self, mode: bool = True) -> LPIPS:
        return super().train(False)

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The five unit-normalised AlexNet feature maps of [N, 3, H, W] in [-1, 1] (float32). The trunk runs in
        the autocast dtype when one is active; the normalisation and everything after it in float32 (bf16's 8
        bits made the distance of two near images rounding noise, and early stopping acted on it)."""
        outs = self.net.net(self.net.scaling_layer(x))
        feats = []
        with torch.autocast(x.device.type, enabled=False):
            for out in outs:
                out = out.float()
                feats.append(out / (out.square().sum(dim=1, keepdim=True).sqrt() + 1e-10))
        return feats

    def distance(self, fx: list[torch.Tensor], fy: list[torch.Tensor]) -> torch.Tensor:
        """LPIPS of two lists of :meth:`features` -> [N] (float32): the calibrated heads on the squared
        differences, averaged over space, summed over the five layers."""
        with torch.autocast(fx[0].device.type, enabled=False):
            total = 0
            for head, a, b in zip(self.net.lins, fx, fy):
                total = total + head((a - b).square()).mean(dim=(2, 3))
            return total.reshape(fx[0].shape[0])

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """[N, 3, H, W] x [N, 3, H, W] float in [-1, 1] -> [N] distances (0 for identical images). For a fixed
        ``y``, compute ``features(y)`` once and call :meth:`distance` (as ``InversionLoss`` does)."""
        if x.ndim != 4 or x.shape[1] != 3 or x.shape != y.shape:
            raise ValueError(f"expected two [N, 3, H, W] batches of one shape, got {tuple(x.shape)}, {tuple(y.shape)}")
        return self.distance(self.features(x), self.features(y))
