"""StyleGAN3 generator (Karras et al., "Alias-Free Generative Adversarial Networks", 2021).

Configs T (3x3 convs) and R (1x1 convs, radial down-sampling filters). Module, parameter and
buffer names match NVIDIA's release so that their state dicts load one to one.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from . import ops
from .config import Bounds, ConfigError
from .filters import design_lowpass_filter
from .layers import FullyConnectedLayer, GeneratorMixin, MappingNetwork


def modulated_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    styles: torch.Tensor,
    demodulate: bool = True,
    padding: int = 0,
    input_gain: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-sample modulated convolution as one grouped conv.

    x: [N, I, H, W]; weight: [O, I, k, k]; styles: [N, I]; input_gain: [] or [I].
    """
    n = x.shape[0]
    out_ch, in_ch, kh, kw = weight.shape
    if demodulate:  # pre-normalise to keep fp16 in range
        weight = weight * weight.square().mean([1, 2, 3], keepdim=True).rsqrt()
        styles = styles * styles.square().mean().rsqrt()
    w = weight.unsqueeze(0) * styles.unsqueeze(1).unsqueeze(3).unsqueeze(4)  # [N, O, I, k, k]
    if demodulate:
        dcoefs = (w.square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt()  # [N, O]
        w = w * dcoefs.unsqueeze(2).unsqueeze(3).unsqueeze(4)
    if input_gain is not None:
        gain = input_gain.expand(n, in_ch)
        w = w * gain.unsqueeze(1).unsqueeze(3).unsqueeze(4)
    x = x.reshape(1, -1, *x.shape[2:])
    w = w.reshape(-1, in_ch, kh, kw)
    x = torch.nn.functional.conv2d(x, w.to(x.dtype), padding=padding, groups=n)
    return x.reshape(n, -1, *x.shape[2:])


class SynthesisInput(nn.Module):
    """Fourier features at a fixed set of frequencies, rotated and translated per sample."""

    def __init__(
        self,
        w_dim: int,  # intermediate latent width
        channels: int,  # number of output channels
        size: int | list[int],  # output size, [width, height] or one int
        sampling_rate: float,  # output sampling rate
        bandwidth: float,  # frequency radius of the features
    ) -> None:
        super().__init__()
        self.w_dim = w_dim
        self.channels = channels
        self.size = np.broadcast_to(np.asarray(size), [2])
        self._size_px = (int(self.size[0]), int(self.size[1]))  # plain ints: torch.compile traces numpy as tensors
        self.sampling_rate = sampling_rate
        self.bandwidth = bandwidth
        freqs = torch.randn([channels, 2])  # uniform over a disc
        radii = freqs.square().sum(dim=1, keepdim=True).sqrt()
        freqs /= radii * radii.square().exp().pow(0.25)
        freqs *= bandwidth
        phases = torch.rand([channels]) - 0.5
        self.weight = nn.Parameter(torch.randn([channels, channels]))
        self.affine = FullyConnectedLayer(w_dim, 4, weight_init=0, bias_init=[1, 0, 0, 0])
        self.register_buffer("transform", torch.eye(3, 3))  # user transform, [row, col]
        self.register_buffer("freqs", freqs)
        self.register_buffer("phases", phases)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        """w: [N, w_dim] -> [N, channels, height, width]."""
        n = w.shape[0]
        transforms = self.transform.unsqueeze(0)
        freqs = self.freqs.unsqueeze(0)
        phases = self.phases.unsqueeze(0)
        t = self.affine(w)  # (cos, sin, tx, ty), rotation normalised below
        t = t / t[:, :2].norm(dim=1, keepdim=True)
        eye = torch.eye(3, device=w.device, dtype=w.dtype).unsqueeze(0).repeat([n, 1, 1])
        m_r = eye.clone()
        m_r[:, 0, 0] = t[:, 0]
        m_r[:, 0, 1] = -t[:, 1]
        m_r[:, 1, 0] = t[:, 1]
        m_r[:, 1, 1] = t[:, 0]
        m_t = eye.clone()
        m_t[:, 0, 2] = -t[:, 2]
        m_t[:, 1, 2] = -t[:, 3]
        transforms = m_r @ m_t @ transforms
        phases = phases + (freqs @ transforms[:, :2, 2:]).squeeze(2)
        freqs = freqs @ transforms[:, :2, :2]
        # Fade out frequencies that the transform pushed above the band limit.
        amplitudes = (1 - (freqs.norm(dim=2) - self.bandwidth) / (self.sampling_rate / 2 - self.bandwidth)).clamp(0, 1)
        theta = torch.eye(2, 3, device=w.device, dtype=w.dtype)
        width, height = self._size_px
        theta[0, 0] = 0.5 * width / self.sampling_rate
        theta[1, 1] = 0.5 * height / self.sampling_rate
        grid = torch.nn.functional.affine_grid(theta.unsqueeze(0), [1, 1, height, width], align_corners=False)
        x = (grid.unsqueeze(3) @ freqs.permute(0, 2, 1).unsqueeze(1).unsqueeze(2)).squeeze(3)  # [N, H, W, C]
        x = x + phases.unsqueeze(1).unsqueeze(2)
        x = torch.sin(x * (np.pi * 2))
        x = x * amplitudes.unsqueeze(1).unsqueeze(2)
        x = x @ (self.weight / np.sqrt(self.channels)).t()
        return x.permute(0, 3, 1, 2)

    def extra_repr(self) -> str:
        return (
            f"w_dim={self.w_dim}, channels={self.channels}, size={list(self.size)}, "
            f"sampling_rate={self.sampling_rate:g}, bandwidth={self.bandwidth:g}"
        )


class SynthesisLayer(nn.Module):
    """Modulated conv followed by bias + filtered leaky ReLU (up, activate, down)."""

    def __init__(
        self,
        w_dim: int,  # intermediate latent width
        is_torgb: bool,  # the final RGB layer (linear, not demodulated)
        is_critically_sampled: bool,  # one of the last layers (no radial filter)
        use_fp16: bool,  # run in float16 on CUDA
        in_channels: int,  # input channels
        out_channels: int,  # output channels
        in_size: int | list[int],  # input size, [width, height] or one int
        out_size: int | list[int],  # output size
        in_sampling_rate: int,  # input sampling rate
        out_sampling_rate: int,  # output sampling rate
        in_cutoff: float,  # cutoff of the input band
        out_cutoff: float,  # cutoff of the output band
        in_half_width: float,  # transition half-width of the input band
        out_half_width: float,  # transition half-width of the output band
        conv_kernel: int = 3,  # convolution kernel size (1 for config R)
        filter_size: int = 6,  # low-pass taps per unit of up/down factor
        lrelu_upsampling: int = 2,  # oversampling of the nonlinearity
        use_radial_filters: bool = False,  # radial down-sampling filter (config R)
        conv_clamp: float | None = 256,  # clamp of the pre-activation output
        magnitude_ema_beta: float = 0.999,  # decay of the input magnitude average
    ) -> None:
        super().__init__()
        self.w_dim = w_dim
        self.is_torgb = is_torgb
        self.is_critically_sampled = is_critically_sampled
        self.use_fp16 = use_fp16
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.in_size = np.broadcast_to(np.asarray(in_size), [2])
        self.out_size = np.broadcast_to(np.asarray(out_size), [2])
        self.in_sampling_rate = in_sampling_rate
        self.out_sampling_rate = out_sampling_rate
        self.tmp_sampling_rate = max(in_sampling_rate, out_sampling_rate) * (1 if is_torgb else lrelu_upsampling)
        self.in_cutoff = in_cutoff
        self.out_cutoff = out_cutoff
        self.in_half_width = in_half_width
        self.out_half_width = out_half_width
        self.conv_kernel = 1 if is_torgb else conv_kernel
        self.conv_clamp = conv_clamp
        self.magnitude_ema_beta = magnitude_ema_beta
        self.impl = "fast"  # "fast", "reference" or "triton" ops

        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, self.conv_kernel, self.conv_kernel]))
        self.bias = nn.Parameter(torch.zeros([out_channels]))
        self.register_buffer("magnitude_ema", torch.ones([]))

        self.up_factor = int(np.rint(self.tmp_sampling_rate / in_sampling_rate))
        assert in_sampling_rate * self.up_factor == self.tmp_sampling_rate
        self.up_taps = filter_size * self.up_factor if self.up_factor > 1 and not is_torgb else 1
        self.register_buffer(
            "up_filter",
            design_lowpass_filter(self.up_taps, in_cutoff, in_half_width * 2, self.tmp_sampling_rate),
        )
        self.down_factor = int(np.rint(self.tmp_sampling_rate / out_sampling_rate))
        assert out_sampling_rate * self.down_factor == self.tmp_sampling_rate
        self.down_taps = filter_size * self.down_factor if self.down_factor > 1 and not is_torgb else 1
        self.down_radial = use_radial_filters and not is_critically_sampled
        self.register_buffer(
            "down_filter",
            design_lowpass_filter(
                self.down_taps, out_cutoff, out_half_width * 2, self.tmp_sampling_rate, radial=self.down_radial
            ),
        )
        # Padding so that output sample centres sit where the symmetric interpretation puts them.
        pad_total = (self.out_size - 1) * self.down_factor + 1  # size before downsampling
        pad_total -= (self.in_size + self.conv_kernel - 1) * self.up_factor  # size after upsampling
        pad_total += self.up_taps + self.down_taps - 2  # shrinkage by the two filters
        pad_lo = (pad_total + self.up_factor) // 2
        pad_hi = pad_total - pad_lo
        self.padding = [int(pad_lo[0]), int(pad_hi[0]), int(pad_lo[1]), int(pad_hi[1])]

    def forward(
        self,
        x: torch.Tensor,
        w: torch.Tensor,
        noise_mode: str = "random",
        force_fp32: bool = False,
        update_emas: bool = False,
    ) -> torch.Tensor:
        """x: [N, in_channels, H, W], w: [N, w_dim] -> [N, out_channels, out_h, out_w].

        ``noise_mode`` is accepted for interface parity with StyleGAN2; StyleGAN3 has no noise.
        """
        if update_emas:
            magnitude = x.detach().to(torch.float32).square().mean()
            self.magnitude_ema.copy_(magnitude.lerp(self.magnitude_ema, self.magnitude_ema_beta))
        input_gain = self.magnitude_ema.rsqrt()
        styles = self.affine(w)
        if self.is_torgb:
            styles = styles * (1 / np.sqrt(self.in_channels * (self.conv_kernel**2)))
        use_fp16 = self.use_fp16 and not force_fp32 and x.device.type == "cuda"
        dtype = torch.float16 if use_fp16 else (torch.float64 if x.dtype == torch.float64 else torch.float32)
        if not use_fp16 and x.dtype in (torch.bfloat16, torch.float16) and torch.is_autocast_enabled(x.device.type):
            # Under autocast the convolutions cast to the autocast dtype anyway: a cast to float32 here would
            # only round-trip every layer's activations through float32 memory (and back).
            dtype = x.dtype
        x = modulated_conv2d(
            x.to(dtype),
            self.weight,
            styles,
            demodulate=not self.is_torgb,
            padding=self.conv_kernel - 1,
            input_gain=input_gain,
        )
        if self.impl == "triton":
            from . import triton_ops  # imported on first use: Triton is an optional CUDA fast path

            op = triton_ops.filtered_lrelu
        else:
            op = ops.filtered_lrelu_ref if self.impl == "reference" else ops.filtered_lrelu
        args = self.filtered_lrelu_args()
        return op(x, args.pop("fu"), args.pop("fd"), self.bias.to(x.dtype), **args)

    def filtered_lrelu_args(self) -> dict:
        """The arguments of this layer's filtered leaky ReLU but input and bias: ``fu``, ``fd``, ``up``, ``down``,
        ``padding``, ``gain``, ``slope``, ``clamp`` (what :func:`stylegan3.triton_ops.trial` runs per layer kind)."""
        return {
            "fu": self.up_filter,
            "fd": self.down_filter,
            "up": self.up_factor,
            "down": self.down_factor,
            "padding": self.padding,
            "gain": 1.0 if self.is_torgb else math.sqrt(2),  # a float: a numpy scalar splits a compiled graph
            "slope": 1.0 if self.is_torgb else 0.2,
            "clamp": self.conv_clamp,
        }

    def extra_repr(self) -> str:
        return (
            f"in={self.in_channels}x{self.in_size[0]}@{self.in_sampling_rate:g}, "
            f"out={self.out_channels}x{self.out_size[0]}@{self.out_sampling_rate:g}, "
            f"up={self.up_factor}, down={self.down_factor}, kernel={self.conv_kernel}, "
            f"radial={self.down_radial}, torgb={self.is_torgb}, fp16={self.use_fp16}"
        )


class SynthesisNetwork(nn.Module):
    """W+ [N, num_ws, w_dim] -> image [N, img_channels, res, res]."""

    def __init__(
        self,
        w_dim: int,  # intermediate latent width
        img_resolution: int,  # output resolution
        img_channels: int,  # output channels
        channel_base: int = 32768,  # overall width multiplier
        channel_max: int = 512,  # maximum channels of a layer
        num_layers: int = 14,  # synthesis layers, excluding ToRGB
        num_critical: int = 2,  # critically sampled layers at the end
        first_cutoff: float = 2,  # cutoff of the first layer
        first_stopband: float = 2**2.1,  # stopband of the first layer
        last_stopband_rel: float = 2**0.3,  # last stopband relative to its cutoff
        margin_size: int = 10,  # extra pixels around the image in intermediate layers
        output_scale: float = 0.25,  # scale of the output image
        num_fp16_res: int = 4,  # float16 in this many highest resolutions (CUDA)
        **layer_kwargs,  # SynthesisLayer arguments
    ) -> None:
        super().__init__()
        self.w_dim = w_dim
        self.num_ws = num_layers + 2
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        self.num_layers = num_layers
        self.num_critical = num_critical
        self.margin_size = margin_size
        self.output_scale = output_scale
        self.num_fp16_res = num_fp16_res
        self.gradient_checkpointing = False

        last_cutoff = img_resolution / 2
        last_stopband = last_cutoff * last_stopband_rel
        exponents = np.minimum(np.arange(num_layers + 1) / (num_layers - num_critical), 1)
        cutoffs = first_cutoff * (last_cutoff / first_cutoff) ** exponents
        stopbands = first_stopband * (last_stopband / first_stopband) ** exponents
        sampling_rates = np.exp2(np.ceil(np.log2(np.minimum(stopbands * 2, img_resolution))))
        half_widths = np.maximum(stopbands, sampling_rates / 2) - cutoffs
        sizes = sampling_rates + margin_size * 2
        sizes[-2:] = img_resolution
        channels = np.rint(np.minimum((channel_base / 2) / cutoffs, channel_max))
        channels[-1] = img_channels

        self.input = SynthesisInput(
            w_dim=w_dim,
            channels=int(channels[0]),
            size=int(sizes[0]),
            sampling_rate=sampling_rates[0],
            bandwidth=cutoffs[0],
        )
        self.layer_names = []
        for idx in range(num_layers + 1):
            prev = max(idx - 1, 0)
            layer = SynthesisLayer(
                w_dim=w_dim,
                is_torgb=idx == num_layers,
                is_critically_sampled=idx >= num_layers - num_critical,
                use_fp16=bool(sampling_rates[idx] * (2**num_fp16_res) > img_resolution),
                in_channels=int(channels[prev]),
                out_channels=int(channels[idx]),
                in_size=int(sizes[prev]),
                out_size=int(sizes[idx]),
                in_sampling_rate=int(sampling_rates[prev]),
                out_sampling_rate=int(sampling_rates[idx]),
                in_cutoff=cutoffs[prev],
                out_cutoff=cutoffs[idx],
                in_half_width=half_widths[prev],
                out_half_width=half_widths[idx],
                **layer_kwargs,
            )
            name = f"L{idx}_{layer.out_size[0]}_{layer.out_channels}"
            setattr(self, name, layer)
            self.layer_names.append(name)

    def forward(self, ws: torch.Tensor, **layer_kwargs) -> torch.Tensor:
        """ws: [N, num_ws, w_dim] -> [N, img_channels, res, res] float32, roughly in [-1, 1]."""
        ws = ws.to(torch.float32).unbind(dim=1)
        x = self.input(ws[0])
        for name, w in zip(self.layer_names, ws[1:]):
            layer = getattr(self, name)
            if self.gradient_checkpointing and torch.is_grad_enabled():
                x = checkpoint(layer, x, w, use_reentrant=False, **layer_kwargs)
            else:
                x = layer(x, w, **layer_kwargs)
        if self.output_scale != 1:
            x = x * self.output_scale
        return x.to(torch.float32)

    def extra_repr(self) -> str:
        return f"w_dim={self.w_dim}, num_ws={self.num_ws}, img_resolution={self.img_resolution}"


class Generator(GeneratorMixin, nn.Module):
    """StyleGAN3 generator: ``mapping`` (z -> W+) and ``synthesis`` (W+ -> image)."""

    architecture = "stylegan3"
    SYNTHESIS_LIMITS = {  # NVIDIA's: 14 layers, 2 critical, 512 (T) or 1024 (R) channels, kernel 3 (T) or 1 (R)
        "channel_base": Bounds(1, 1 << 20, integer=True),
        "channel_max": Bounds(1, 2048, integer=True),
        "num_layers": Bounds(1, 64, integer=True),
        "num_critical": Bounds(0, 63, integer=True),
        "first_cutoff": Bounds(0, 1024, above=True),
        "first_stopband": Bounds(0, 1024, above=True),
        "last_stopband_rel": Bounds(1, 16),
        "margin_size": Bounds(0, 256, integer=True),
        "output_scale": Bounds(-1e6, 1e6),
        "num_fp16_res": Bounds(0, 16, integer=True),
        "conv_kernel": Bounds(1, 7, integer=True),
        "filter_size": Bounds(1, 16, integer=True),
        "lrelu_upsampling": Bounds(1, 8, integer=True),
        "conv_clamp": Bounds(0, 1e6, above=True),
        "magnitude_ema_beta": Bounds(0, 1),
    }

    @classmethod
    def check_init_kwargs(cls, kwargs: dict) -> None:
        super().check_init_kwargs(kwargs)
        if kwargs.get("num_critical", 2) >= kwargs.get("num_layers", 14):
            raise ConfigError("num_critical must be smaller than num_layers")

    @classmethod
    def parameter_bound(cls, kwargs: dict) -> int:
        layers = int(kwargs.get("num_layers", 14)) + 1
        channels, kernel = int(kwargs.get("channel_max", 512)), int(kwargs.get("conv_kernel", 3))
        w_dim = int(kwargs.get("w_dim") or 0)
        return super().parameter_bound(kwargs) + layers * channels * (channels * kernel * kernel + w_dim + 2)

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
        self.mapping = MappingNetwork(
            z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, num_ws=self.num_ws, **(mapping_kwargs or {})
        )
