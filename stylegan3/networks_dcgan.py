"""A DCGAN face generator (Radford et al. 2016, in the layout of PyTorch's DCGAN tutorial) behind the project's
generator interface (``stylegan3.interface``), so that inversion, the encoder, tuning, the mapper and the page run on
it as on a StyleGAN.

The known name ``digiface-dcgan-64`` is the 64 px network trained on DigiFace-1M that ships in the
``gan-face-generate`` wheel (MIT code; the weights inherit DigiFace-1M's non-commercial research terms); see
``stylegan3.io.load`` and ``docs/weights.md``.

Its W+ is the output of the first block: z [N, z_dim] -> ConvTranspose 4x4 + BatchNorm + ReLU -> [N, C, 4, 4],
read as ``num_ws = 16`` rows (the 4x4 positions, row-major) of ``w_dim = C`` features. ``mapping`` is that block,
``synthesis`` the rest of the network. Inverting z alone reaches about 10 dB PSNR on real photos; this 8,192-value
latent reaches 28-31 dB (measured in ``docs/bench/digiface_inversion.log``).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .framing import DIGIFACE, Framing
from .layers import IMPLS, mapping_mean

NOISE_MODES = ("random", "const", "none")


def _check_size(name: str, value: object, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{name} must be an integer in [{low}, {high}], got {value!r}")
    return value


class DCGANMapping(nn.Module):
    """z [N, z_dim] -> W+ [N, num_ws, w_dim]: the generator's first block (transposed conv, BatchNorm, ReLU) read
    as one row per position of its 4x4 output, with StyleGAN's truncation towards ``w_avg``."""

    def __init__(
        self,
        z_dim: int,  # input latent width
        w_dim: int,  # channels of the 4x4 first-block output (a row of W+)
    ) -> None:
        super().__init__()
        self.z_dim, self.c_dim, self.w_dim, self.num_ws = z_dim, 0, w_dim, 16
        self.net = nn.Sequential(
            nn.ConvTranspose2d(z_dim, w_dim, 4, 1, 0, bias=False),
            nn.BatchNorm2d(w_dim),
            nn.ReLU(),
        )
        # The mean W+ over 10,000 z (seed 123), written when the weights are imported; truncation's centre.
        self.register_buffer("w_avg", torch.zeros([self.num_ws, w_dim]))

    def forward(
        self,
        z: torch.Tensor,
        c: torch.Tensor | None = None,
        truncation_psi: float = 1.0,
        truncation_cutoff: int | None = None,
        update_emas: bool = False,
    ) -> torch.Tensor:
        """z: [N, z_dim] -> W+ [N, 16, w_dim] float32 (non-negative: after the ReLU). ``c`` must be None (no labels);
        truncation moves the first ``truncation_cutoff`` rows (all when None) towards ``w_avg``."""
        if c is not None and c.numel() > 0:
            raise ValueError("this generator takes no class label (c_dim = 0)")
        x = self.net(z.to(torch.float32).reshape(-1, self.z_dim, 1, 1))
        ws = x.flatten(2).transpose(1, 2)  # [N, 16, w_dim]: position-major rows
        if truncation_psi != 1:
            rows = slice(None) if truncation_cutoff is None else slice(0, truncation_cutoff)
            ws = ws.clone()
            ws[:, rows] = self.w_avg[rows].lerp(ws[:, rows], truncation_psi)
        return ws

    def extra_repr(self) -> str:
        return f"z_dim={self.z_dim}, w_dim={self.w_dim}, num_ws={self.num_ws}"


class DCGANSynthesis(nn.Module):
    """W+ [N, 16, w_dim] -> image [N, img_channels, res, res] in [-1, 1]: the generator after its first block
    (transposed convs x2 + BatchNorm + ReLU, then a transposed conv x2 + tanh)."""

    def __init__(
        self,
        w_dim: int,  # channels of the 4x4 input
        img_resolution: int,  # output side, 4 * 2^k
        img_channels: int,  # output channels
    ) -> None:
        super().__init__()
        self.w_dim, self.img_resolution, self.img_channels, self.num_ws = w_dim, img_resolution, img_channels, 16
        blocks = int(math.log2(img_resolution)) - 2
        layers: list[nn.Module] = []
        channels = w_dim
        for _ in range(blocks - 1):
            layers += [nn.ConvTranspose2d(channels, channels // 2, 4, 2, 1, bias=False), nn.BatchNorm2d(channels // 2)]
            layers.append(nn.ReLU())
            channels //= 2
        layers += [nn.ConvTranspose2d(channels, img_channels, 4, 2, 1, bias=False), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(
        self, ws: torch.Tensor, noise_mode: str = "const", force_fp32: bool = True, update_emas: bool = False
    ) -> torch.Tensor:
        """ws: [N, 16, w_dim] -> [N, img_channels, res, res] float32 in [-1, 1]. The network has no noise inputs:
        every ``noise_mode`` renders the same image (an unknown one is a ValueError); ``force_fp32`` and
        ``update_emas`` have nothing to act on (the layers run in the input's dtype, BatchNorm in eval mode)."""
        if noise_mode not in NOISE_MODES:
            raise ValueError(f"noise_mode must be one of {', '.join(NOISE_MODES)}, got {noise_mode!r}")
        if ws.ndim != 3 or ws.shape[1:] != (self.num_ws, self.w_dim):
            raise ValueError(f"ws must be [N, {self.num_ws}, {self.w_dim}], got {tuple(ws.shape)}")
        x = ws.transpose(1, 2).reshape(-1, self.w_dim, 4, 4)
        return self.net(x)

    def extra_repr(self) -> str:
        return f"w_dim={self.w_dim}, img_resolution={self.img_resolution}, img_channels={self.img_channels}"


class Generator(nn.Module):
    """DCGAN generator: ``mapping`` (z -> W+, the first block) and ``synthesis`` (W+ -> image, the rest)."""

    architecture = "dcgan"
    framing: Framing = DIGIFACE  # the face crop its training images had (DigiFace-1M's tight crop)
    delta_reg_applies = False  # W+ rows are positions of a feature map, not one style per layer (see interface)

    def __init__(
        self,
        z_dim: int = 100,  # input latent width
        w_dim: int = 512,  # channels after the first block (a W+ row)
        img_resolution: int = 64,  # output side: 8, 16, 32, ... (channels halve at each doubling)
        img_channels: int = 3,  # output channels
    ) -> None:
        super().__init__()
        _check_size("z_dim", z_dim, 1, 4096)
        _check_size("w_dim", w_dim, 1, 8192)
        _check_size("img_channels", img_channels, 1, 4)
        _check_size("img_resolution", img_resolution, 8, 1024)
        if img_resolution & (img_resolution - 1):
            raise ValueError(f"img_resolution must be a power of two, got {img_resolution}")
        if w_dim >> (int(math.log2(img_resolution)) - 3) < 1:
            raise ValueError(f"w_dim {w_dim} is too narrow to halve down to {img_resolution} px")
        self.init_kwargs = {
            "z_dim": z_dim,
            "w_dim": w_dim,
            "img_resolution": img_resolution,
            "img_channels": img_channels,
        }
        self.z_dim, self.c_dim, self.w_dim = z_dim, 0, w_dim
        self.img_resolution, self.img_channels = img_resolution, img_channels
        self.mapping = DCGANMapping(z_dim, w_dim)
        self.synthesis = DCGANSynthesis(w_dim, img_resolution, img_channels)
        self.num_ws = self.mapping.num_ws

    def forward(
        self,
        z: torch.Tensor,
        c: torch.Tensor | None = None,
        truncation_psi: float = 1.0,
        truncation_cutoff: int | None = None,
        update_emas: bool = False,
        **synthesis_kwargs,
    ) -> torch.Tensor:
        """z: [N, z_dim] -> image [N, img_channels, res, res] in [-1, 1]."""
        ws = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff)
        return self.synthesis(ws, **synthesis_kwargs)

    def mean_w(self, n: int = 10000, seed: int = 123, batch_size: int = 1000) -> torch.Tensor:
        """Mean of ``mapping(z)`` over ``n`` z from ``np.random.RandomState(seed)`` (drawn on the CPU), no truncation:
        [16, w_dim] float32 on the generator's device (rows differ: they are positions). Cached per network until
        its mapping weights change."""
        return mapping_mean(self, n, seed, batch_size)

    def set_impl(self, impl: str) -> None:
        """Accepts every ops implementation (``fast``, ``reference``, ``triton``): the network is plain
        convolutions, which run the same under each (an unknown name is a ValueError)."""
        if impl not in IMPLS:
            raise ValueError(f"impl must be one of {', '.join(IMPLS)}, not {impl!r}")

    def set_gradient_checkpointing(self, enabled: bool = True) -> None:
        """Nothing to do: the network is small enough to keep its activations (accepted for the interface)."""

    def extra_repr(self) -> str:
        return f"architecture=dcgan, z_dim={self.z_dim}, num_ws={self.num_ws}, w_dim={self.w_dim}"


def import_tutorial_state(G: Generator, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a DCGAN-tutorial state dict (``main.0.weight`` ... ``main.13.weight``, one Sequential) to ``G``'s keys
    (``mapping.net.*`` for the first three modules, ``synthesis.net.*`` for the rest), adding the mean W+ as
    ``mapping.w_avg`` (zeros: the caller computes it once the weights are in). Keys are renamed, never guessed: the
    caller checks the result strictly against ``G``."""
    head = len(G.mapping.net)
    out: dict[str, torch.Tensor] = {"mapping.w_avg": torch.zeros_like(G.mapping.w_avg)}
    for key, value in state.items():
        prefix, _, rest = key.partition(".")
        index, _, name = rest.partition(".")
        if prefix != "main" or not index.isdigit() or not name:
            out[key] = value  # left as is: the strict check names it as unexpected
            continue
        i = int(index)
        out[f"mapping.net.{i}.{name}" if i < head else f"synthesis.net.{i - head}.{name}"] = value
    return out
