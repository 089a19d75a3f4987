"""StyleGAN2 generator, config F ('skip' architecture; Karras et al. 2020).

Module, parameter and buffer names match NVIDIA's release (stylegan3 and stylegan2-ada-pytorch
repositories), so that their state dicts load one to one.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from . import ops
from .config import Bounds, ConfigError
from .layers import FullyConnectedLayer, GeneratorMixin, MappingNetwork

NOISE_MODES = ("random", "const", "none")  # per-pixel noise: fresh, the stored noise_const, or off


def setup_filter(f: list[float]) -> torch.Tensor:
    """A short 1-D kernel as the normalised 2-D outer product, e.g. [1, 3, 3, 1] -> [4, 4]."""
    f = torch.as_tensor(f, dtype=torch.float32)
    f = torch.outer(f, f) if f.ndim == 1 else f
    return f / f.sum()


def _upfirdn2d(impl: str):
    return ops.upfirdn2d_ref if impl == "reference" else ops.upfirdn2d  # "triton": no StyleGAN2 kernel, fast path


def modulated_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    styles: torch.Tensor,
    noise: torch.Tensor | None = None,
    up: int = 1,
    padding: int = 0,
    resample_filter: torch.Tensor | None = None,
    demodulate: bool = True,
    impl: str = "fast",
) -> torch.Tensor:
    """Modulated conv as one grouped conv; ``up=2`` is a transposed conv followed by a FIR filter.

    x: [N, I, H, W]; weight: [O, I, k, k]; styles: [N, I]; noise broadcastable to the output.
    """
    n = x.shape[0]
    out_ch, in_ch, kh, kw = weight.shape
    if x.dtype == torch.float16 and demodulate:  # keep float16 in range
        weight = weight * (1 / np.sqrt(in_ch * kh * kw) / weight.norm(float("inf"), dim=[1, 2, 3], keepdim=True))
        styles = styles / styles.norm(float("inf"), dim=1, keepdim=True)
    w = weight.unsqueeze(0) * styles.reshape(n, 1, -1, 1, 1)  # [N, O, I, k, k]
    if demodulate:
        dcoefs = (w.square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt()
        w = w * dcoefs.reshape(n, -1, 1, 1, 1)
    x = x.reshape(1, -1, *x.shape[2:])
    if up == 1:
        x = torch.nn.functional.conv2d(x, w.reshape(-1, in_ch, kh, kw).to(x.dtype), padding=padding, groups=n)
    else:
        # Transposed conv (no zero-stuffing), then the low-pass filter; the kernel is used as a true
        # convolution here, as in NVIDIA's layer with up > 1.
        fh, fw = resample_filter.shape
        px0 = padding + (fw + up - 1) // 2 - (kw - 1)
        px1 = padding + (fw - up) // 2 - (kw - up)
        py0 = padding + (fh + up - 1) // 2 - (kh - 1)
        py1 = padding + (fh - up) // 2 - (kh - up)
        pxt = max(min(-px0, -px1), 0)
        pyt = max(min(-py0, -py1), 0)
        wt = w.transpose(1, 2).reshape(n * in_ch, out_ch, kh, kw)
        x = torch.nn.functional.conv_transpose2d(x, wt.to(x.dtype), stride=up, padding=[pyt, pxt], groups=n)
        pad = [px0 + pxt, px1 + pxt, py0 + pyt, py1 + pyt]
        x = _upfirdn2d(impl)(x, resample_filter.to(x.dtype), padding=pad, gain=up**2)
    x = x.reshape(n, -1, *x.shape[2:])
    if noise is not None:
        x = x + noise.to(x.dtype)
    return x


class SynthesisLayer(nn.Module):
    """Modulated 3x3 conv (optionally upsampling 2x) + noise + bias + leaky ReLU."""

    def __init__(
        self,
        in_channels: int,  # input channels
        out_channels: int,  # output channels
        w_dim: int,  # intermediate latent width
        resolution: int,  # output resolution
        kernel_size: int = 3,  # convolution kernel size
        up: int = 1,  # upsampling factor
        use_noise: bool = True,  # add per-pixel noise
        activation: str = "lrelu",  # activation
        resample_filter: list[float] | None = None,  # low-pass filter taps (default [1, 3, 3, 1])
        conv_clamp: float | None = None,  # clamp of the output, None = off
        channels_last: bool = False,  # memory format (kept for parity, unused)
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.w_dim = w_dim
        self.resolution = resolution
        self.up = up
        self.use_noise = use_noise
        self.activation = activation
        self.conv_clamp = conv_clamp
        self.padding = kernel_size // 2
        self.act_gain = np.sqrt(2) if activation == "lrelu" else 1.0
        self.impl = "fast"
        self.register_buffer("resample_filter", setup_filter(resample_filter or [1, 3, 3, 1]))
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, kernel_size, kernel_size]))
        if use_noise:
            self.register_buffer("noise_const", torch.randn([resolution, resolution]))
            self.noise_strength = nn.Parameter(torch.zeros([]))
        self.bias = nn.Parameter(torch.zeros([out_channels]))

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise_mode: str = "random", gain: float = 1.0) -> torch.Tensor:
        """x: [N, in_channels, r/up, r/up], w: [N, w_dim] -> [N, out_channels, r, r].

        noise_mode: "random" (fresh noise), "const" (the stored noise_const) or "none".
        """
        if noise_mode not in NOISE_MODES:
            raise ValueError(f"noise_mode must be random, const or none, not {noise_mode!r}")
        styles = self.affine(w)
        noise = None
        if self.use_noise and noise_mode == "random":
            noise = (
                torch.randn([x.shape[0], 1, self.resolution, self.resolution], device=x.device) * self.noise_strength
            )
        if self.use_noise and noise_mode == "const":
            noise = self.noise_const * self.noise_strength
        x = modulated_conv2d(
            x,
            self.weight,
            styles,
            noise=noise,
            up=self.up,
            padding=self.padding,
            resample_filter=self.resample_filter,
            impl=self.impl,
        )
        clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return ops.bias_act(x, self.bias.to(x.dtype), act=self.activation, gain=self.act_gain * gain, clamp=clamp)

    def extra_repr(self) -> str:
        return f"in={self.in_channels}, out={self.out_channels}, resolution={self.resolution}, up={self.up}"


class ToRGBLayer(nn.Module):
    """Modulated 1x1 conv to RGB, no demodulation."""

    def __init__(
        self,
        in_channels: int,  # input channels
        out_channels: int,  # image channels
        w_dim: int,  # intermediate latent width
        kernel_size: int = 1,  # kernel size
        conv_clamp: float | None = None,  # clamp of the output, None = off
        channels_last: bool = False,  # memory format (kept for parity, unused)
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.conv_clamp = conv_clamp
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, kernel_size, kernel_size]))
        self.bias = nn.Parameter(torch.zeros([out_channels]))
        self.weight_gain = 1 / np.sqrt(in_channels * (kernel_size**2))

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """x: [N, in_channels, H, W] -> [N, out_channels, H, W]."""
        styles = self.affine(w) * self.weight_gain
        x = modulated_conv2d(x, self.weight, styles, demodulate=False)
        return ops.bias_act(x, self.bias.to(x.dtype), clamp=self.conv_clamp)


class SynthesisBlock(nn.Module):
    """One resolution: (upsampling conv,) conv, ToRGB; the image is upsampled and summed (skip)."""

    def __init__(
        self,
        in_channels: int,  # input channels, 0 = first block (learned constant input)
        out_channels: int,  # output channels
        w_dim: int,  # intermediate latent width
        resolution: int,  # resolution of this block
        img_channels: int,  # image channels
        is_last: bool,  # the highest-resolution block
        architecture: str = "skip",  # only "skip" (config F) is implemented
        resample_filter: list[float] | None = None,  # low-pass filter taps (default [1, 3, 3, 1])
        conv_clamp: float | None = None,  # clamp of conv outputs, None = off
        use_fp16: bool = False,  # run in float16 on CUDA
        fp16_channels_last: bool = False,  # memory format (kept for parity, unused)
        fused_modconv_default: bool | str = True,  # kept for parity; the fused form is always used
        **layer_kwargs,  # SynthesisLayer arguments
    ) -> None:
        super().__init__()
        if architecture != "skip":
            raise NotImplementedError(f"StyleGAN2 architecture {architecture!r}: only 'skip' (config F) is supported")
        self.in_channels = in_channels
        self.w_dim = w_dim
        self.resolution = resolution
        self.img_channels = img_channels
        self.is_last = is_last
        self.architecture = architecture
        self.use_fp16 = use_fp16
        self.impl = "fast"
        self.register_buffer("resample_filter", setup_filter(resample_filter or [1, 3, 3, 1]))
        self.num_conv = 0
        self.num_torgb = 0
        if in_channels == 0:
            self.const = nn.Parameter(torch.randn([out_channels, resolution, resolution]))
        else:
            self.conv0 = SynthesisLayer(
                in_channels, out_channels, w_dim=w_dim, resolution=resolution, up=2,
                resample_filter=resample_filter, conv_clamp=conv_clamp, **layer_kwargs,
            )  # fmt: skip
            self.num_conv += 1
        self.conv1 = SynthesisLayer(
            out_channels, out_channels, w_dim=w_dim, resolution=resolution, conv_clamp=conv_clamp, **layer_kwargs
        )
        self.num_conv += 1
        self.torgb = ToRGBLayer(out_channels, img_channels, w_dim=w_dim, conv_clamp=conv_clamp)
        self.num_torgb += 1

    def forward(
        self,
        x: torch.Tensor | None,
        img: torch.Tensor | None,
        ws: torch.Tensor,
        force_fp32: bool = False,
        noise_mode: str = "random",
        update_emas: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """ws: [N, num_conv + num_torgb, w_dim]; returns features and the running image."""
        w_iter = iter(ws.unbind(dim=1))
        use_fp16 = self.use_fp16 and not force_fp32 and ws.device.type == "cuda"
        dtype = torch.float16 if use_fp16 else torch.float32
        if self.in_channels == 0:
            x = self.const.to(dtype).unsqueeze(0).repeat([ws.shape[0], 1, 1, 1])
        else:
            x = x.to(dtype)
            x = self.conv0(x, next(w_iter), noise_mode=noise_mode)
        x = self.conv1(x, next(w_iter), noise_mode=noise_mode)
        if img is not None:
            fh, fw = self.resample_filter.shape
            pad = [(fw + 1) // 2, (fw - 2) // 2, (fh + 1) // 2, (fh - 2) // 2]
            img = _upfirdn2d(self.impl)(img, self.resample_filter, up=2, padding=pad, gain=4)
        y = self.torgb(x, next(w_iter)).to(torch.float32)
        img = img + y if img is not None else y
        return x, img

    def extra_repr(self) -> str:
        return f"resolution={self.resolution}, in_channels={self.in_channels}, fp16={self.use_fp16}"


class SynthesisNetwork(nn.Module):
    """W+ [N, num_ws, w_dim] -> image [N, img_channels, res, res]."""

    def __init__(
        self,
        w_dim: int,  # intermediate latent width
        img_resolution: int,  # output resolution (power of two)
        img_channels: int,  # output channels
        channel_base: int = 32768,  # overall width multiplier
        channel_max: int = 512,  # maximum channels of a block
        num_fp16_res: int = 4,  # float16 in this many highest resolutions (CUDA)
        **block_kwargs,  # SynthesisBlock arguments
    ) -> None:
        super().__init__()
        self.w_dim = w_dim
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        self.num_fp16_res = num_fp16_res
        self.gradient_checkpointing = False
        log2 = int(np.log2(img_resolution))
        if 2**log2 != img_resolution or img_resolution < 4:
            raise ValueError(f"img_resolution must be a power of two >= 4, not {img_resolution}")
        self.block_resolutions = [2**i for i in range(2, log2 + 1)]
        channels = {res: min(channel_base // res, channel_max) for res in self.block_resolutions}
        fp16_resolution = max(2 ** (log2 + 1 - num_fp16_res), 8)
        self.num_ws = 0
        for res in self.block_resolutions:
            block = SynthesisBlock(
                channels[res // 2] if res > 4 else 0,
                channels[res],
                w_dim=w_dim,
                resolution=res,
                img_channels=img_channels,
                is_last=res == img_resolution,
                use_fp16=res >= fp16_resolution,
                **block_kwargs,
            )
            self.num_ws += block.num_conv
            if block.is_last:
                self.num_ws += block.num_torgb
            setattr(self, f"b{res}", block)

    def forward(self, ws: torch.Tensor, **block_kwargs) -> torch.Tensor:
        """ws: [N, num_ws, w_dim] -> [N, img_channels, res, res] float32, roughly in [-1, 1]."""
        ws = ws.to(torch.float32)
        x = img = None
        w_idx = 0
        for res in self.block_resolutions:
            block = getattr(self, f"b{res}")
            block_ws = ws.narrow(1, w_idx, block.num_conv + block.num_torgb)
            w_idx += block.num_conv
            if self.gradient_checkpointing and torch.is_grad_enabled():
                x, img = checkpoint(block, x, img, block_ws, use_reentrant=False, **block_kwargs)
            else:
                x, img = block(x, img, block_ws, **block_kwargs)
        return img

    def extra_repr(self) -> str:
        return f"w_dim={self.w_dim}, num_ws={self.num_ws}, img_resolution={self.img_resolution}"


class Generator(GeneratorMixin, nn.Module):
    """StyleGAN2 generator: ``mapping`` (z -> W+) and ``synthesis`` (W+ -> image)."""

    architecture = "stylegan2"
    SYNTHESIS_LIMITS = {  # NVIDIA's config F: 512 channels, the resample filter [1, 3, 3, 1]
        "channel_base": Bounds(1, 1 << 20, integer=True),
        "channel_max": Bounds(1, 2048, integer=True),
        "num_fp16_res": Bounds(0, 16, integer=True),
        "conv_clamp": Bounds(0, 1e6, above=True),
        "architecture": ("skip",),
    }

    @classmethod
    def check_init_kwargs(cls, kwargs: dict) -> None:
        super().check_init_kwargs(kwargs)
        resolution = kwargs.get("img_resolution")
        if resolution & (resolution - 1):
            raise ConfigError(f"img_resolution: {resolution} is not a power of two")

    @classmethod
    def parameter_bound(cls, kwargs: dict) -> int:
        blocks = max(int(kwargs["img_resolution"]).bit_length() - 2, 1)
        channels, w_dim = int(kwargs.get("channel_max", 512)), int(kwargs.get("w_dim") or 0)
        return super().parameter_bound(kwargs) + blocks * 3 * channels * (channels * 9 + w_dim + 2)

    def __init__(
        self,
        z_dim: int,  # input latent width
        c_dim: int,  # conditioning label width, 0 = none
        w_dim: int,  # intermediate latent width
        img_resolution: int,  # output resolution
        img_channels: int,  # output channels
        mapping_kwargs: dict | None = None,  # MappingNetwork arguments
        **synthesis_kwargs,  # SynthesisNetwork arguments
    ) -> None:
        super().__init__()
        self._store_init_args(z_dim, c_dim, w_dim, img_resolution, img_channels, mapping_kwargs, synthesis_kwargs)
        self.synthesis = SynthesisNetwork(
            w_dim=w_dim, img_resolution=img_resolution, img_channels=img_channels, **synthesis_kwargs
        )
        self.num_ws = self.synthesis.num_ws
        mapping_kwargs = {"num_layers": 8, **(mapping_kwargs or {})}
        self.mapping = MappingNetwork(z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, num_ws=self.num_ws, **mapping_kwargs)
