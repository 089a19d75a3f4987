"""Pure-PyTorch ops of the StyleGAN generators, in two implementations.

* ``*_ref``: the plain formulation (zero-stuffing upsampler, full-rate filtering, then
  discarding samples), easy to read and used by the tests as the definition.
* the fast path (default): upsampling as a transposed convolution (no explicit zeros),
  downsampling as a strided convolution (no discarded pixels), separable filters as two
  1-D passes, and a filtered leaky ReLU whose backward recomputes the upsampled
  activation instead of keeping it alive.

Filters follow the convolution convention: ``f`` is applied as a true convolution, so a
non-symmetric filter is flipped relative to ``torch.nn.functional.conv2d``. Filters are
either ``None`` (identity), 1-D ``[K]`` (separable, applied along x then y) or 2-D ``[K, K]``.
Padding is ``[x0, x1, y0, y1]``, applied after upsampling; negative values crop.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

Padding = Sequence[int]


def normalize_2nd_moment(x: torch.Tensor, dim: int = 1, eps: float = 1e-8) -> torch.Tensor:
    """Scale ``x`` so that the mean of its squares along ``dim`` is one."""
    return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()


def bias_act(
    x: torch.Tensor,
    b: torch.Tensor | None = None,
    act: str = "linear",
    alpha: float = 0.2,
    gain: float = 1.0,
    clamp: float | None = None,
) -> torch.Tensor:
    """``clamp(gain * act(x + b))`` with the bias broadcast along dim 1.

    ``act`` is ``"linear"`` or ``"lrelu"`` (slope ``alpha`` for negative inputs).
    """
    if b is not None:
        x = x + b.reshape([1, -1] + [1] * (x.ndim - 2))
    if act == "lrelu":
        x = F.leaky_relu(x, alpha)
    elif act != "linear":
        raise ValueError(f"unknown activation {act!r}")
    if gain != 1:
        x = x * gain
    if clamp is not None and clamp >= 0:
        x = x.clamp(-clamp, clamp)
    return x


def _parse_padding(padding: int | Padding) -> tuple[int, int, int, int]:
    if isinstance(padding, int):
        return padding, padding, padding, padding
    if len(padding) == 2:
        return int(padding[0]), int(padding[0]), int(padding[1]), int(padding[1])
    x0, x1, y0, y1 = (int(p) for p in padding)
    return x0, x1, y0, y1


def _pad_or_crop(x: torch.Tensor, x0: int, x1: int, y0: int, y1: int) -> torch.Tensor:
    """Pad the last two dims with zeros where positive, crop where negative."""
    x = F.pad(x, [max(x0, 0), max(x1, 0), max(y0, 0), max(y1, 0)])
    h, w = x.shape[-2:]
    return x[..., max(-y0, 0) : h - max(-y1, 0), max(-x0, 0) : w - max(-x1, 0)]


# ----------------------------------------------------------------------------------------
# Reference implementation.


def upfirdn2d_ref(
    x: torch.Tensor,
    f: torch.Tensor | None,
    up: int = 1,
    down: int = 1,
    padding: int | Padding = 0,
    gain: float = 1.0,
) -> torch.Tensor:
    """Upsample by inserting zeros, pad, convolve with ``f``, keep every ``down``-th pixel.

    x: [N, C, H, W]. ``gain`` scales the whole (2-D) filter response.
    """
    n, c, h, w = x.shape
    if up > 1:
        stuffed = x.new_zeros([n, c, h * up, w * up])
        stuffed[:, :, ::up, ::up] = x
        x = stuffed
    x = _pad_or_crop(x, *_parse_padding(padding))
    if f is None:
        f = torch.ones([1, 1], dtype=x.dtype, device=x.device)
    f = (f * gain ** (f.ndim / 2)).to(x.dtype).flip(list(range(f.ndim)))
    if f.ndim == 2:
        x = F.conv2d(x, f[None, None].repeat(c, 1, 1, 1), groups=c)
    else:
        x = F.conv2d(x, f[None, None, None, :].repeat(c, 1, 1, 1), groups=c)
        x = F.conv2d(x, f[None, None, :, None].repeat(c, 1, 1, 1), groups=c)
    return x[:, :, ::down, ::down]


def filtered_lrelu_ref(
    x: torch.Tensor,
    fu: torch.Tensor | None,
    fd: torch.Tensor | None,
    b: torch.Tensor | None = None,
    up: int = 1,
    down: int = 1,
    padding: int | Padding = 0,
    gain: float = math.sqrt(2),
    slope: float = 0.2,
    clamp: float | None = None,
) -> torch.Tensor:
    """Bias, upsample by ``up`` with ``fu``, leaky ReLU, downsample by ``down`` with ``fd``."""
    x = bias_act(x, b)
    x = upfirdn2d_ref(x, fu, up=up, padding=padding, gain=up**2)
    x = bias_act(x, act="lrelu", alpha=slope, gain=gain, clamp=clamp)
    return upfirdn2d_ref(x, fd, down=down)


# ----------------------------------------------------------------------------------------
# Fast implementation. Each pass is a depthwise (groups = channels) convolution, the form that
# CPU and GPU convolution libraries run fastest, with no zero-stuffing and no discarded outputs.


def _passes(f: torch.Tensor | None, gain: float, x: torch.Tensor) -> list[tuple[torch.Tensor, int]]:
    """(depthwise weight [C, 1, kh, kw], axis) per pass; axis 0 = both, -1 = x, -2 = y."""
    if f is None:
        return []
    c = x.shape[1]
    f = f.to(device=x.device, dtype=x.dtype)
    if f.ndim == 2:
        return [((f * gain)[None, None].expand(c, 1, *f.shape).contiguous(), 0)]
    g = gain**0.5
    k = f.shape[0]
    return [
        ((f * g).reshape(1, 1, 1, k).expand(c, 1, 1, k).contiguous(), -1),
        ((f * g).reshape(1, 1, k, 1).expand(c, 1, k, 1).contiguous(), -2),
    ]


def _strides(axis: int, factor: int) -> tuple[int, int]:
    return {0: (factor, factor), -1: (1, factor), -2: (factor, 1)}[axis]


def _window(length: int, taps: int, up: int, lo: int, hi: int) -> tuple[int, int]:
    """Pad (+) / crop (-) amounts that turn a transposed-conv output into the padded 'valid' result."""
    full = (length - 1) * up + taps
    start = taps - 1 - lo
    out = length * up + lo + hi - taps + 1
    return -start, start + out - full


def _pass_amounts(shape: tuple[int, int], weight: torch.Tensor, axis: int, up: int, pad: tuple[int, int, int, int]):
    x0, x1, y0, y1 = pad
    kh, kw = weight.shape[-2:]
    ax = (0, 0) if axis == -2 else _window(shape[1], kw, up, x0, x1)
    ay = (0, 0) if axis == -1 else _window(shape[0], kh, up, y0, y1)
    return ax + ay


def _identity_passes(up: int, gain: float, x: torch.Tensor) -> list[tuple[torch.Tensor, int]]:
    """Zero insertion by a 1-tap transposed conv: the only case where zeros must be written."""
    return [(torch.full([x.shape[1], 1, 1, 1], float(gain), dtype=x.dtype, device=x.device), 0)] if up > 1 else []


# Devices whose depthwise transposed convolutions are slow (measured on an H100: cuDNN's grouped
# dgrad kernels took 78% of a StyleGAN3-R forward+backward). There the zeros are inserted
# explicitly and a depthwise convolution follows; on the CPU oneDNN's transposed kernel is faster.
EXPLICIT_ZEROS_DEVICES = {"cuda"}


def _conv_transpose_dw(
    x: torch.Tensor,
    weight: torch.Tensor,
    stride: tuple[int, int],
    padding: tuple[int, int] = (0, 0),
    output_padding: tuple[int, int] = (0, 0),
) -> torch.Tensor:
    """Depthwise ``F.conv_transpose2d``; weight: [C, 1, kh, kw]."""
    if x.device.type not in EXPLICIT_ZEROS_DEVICES:
        return F.conv_transpose2d(
            x, weight, stride=stride, padding=padding, output_padding=output_padding, groups=x.shape[1]
        )
    (sy, sx), (kh, kw) = stride, weight.shape[-2:]
    n, c, h, w = x.shape
    if sy > 1 or sx > 1:
        stuffed = x.new_zeros([n, c, (h - 1) * sy + 1, (w - 1) * sx + 1])
        stuffed[:, :, ::sy, ::sx] = x
        x = stuffed
    py, px = kh - 1 - padding[0], kw - 1 - padding[1]
    x = _pad_or_crop(x, px, px + output_padding[1], py, py + output_padding[0])
    return F.conv2d(x, weight.flip([2, 3]), groups=c)


def _upsample(x: torch.Tensor, f: torch.Tensor | None, up: int, padding: Padding, gain: float) -> torch.Tensor:
    """Same as ``upfirdn2d_ref(x, f, up=up, padding=padding, gain=gain)``; x: [N, C, H, W]."""
    pad = _parse_padding(padding)
    passes = _passes(f, gain, x) or _identity_passes(up, gain, x)
    if not passes:
        return _pad_or_crop(x * gain if gain != 1 else x, *pad)
    for weight, axis in passes:
        x0, x1, y0, y1 = _pass_amounts(x.shape[-2:], weight, axis, up, pad)
        px, py = max(0, min(-x0, -x1)), max(0, min(-y0, -y1))  # symmetric crop: done by the conv
        x = _conv_transpose_dw(x, weight, _strides(axis, up), padding=(py, px))
        if (x0 + px, x1 + px, y0 + py, y1 + py) != (0, 0, 0, 0):
            x = _pad_or_crop(x, x0 + px, x1 + px, y0 + py, y1 + py)
    return x


def _upsample_adjoint(
    g: torch.Tensor, shape: torch.Size, f: torch.Tensor | None, up: int, padding: Padding, gain: float
) -> torch.Tensor:
    """Vector-Jacobian product of ``_upsample`` for an input of ``shape``: strided convolutions."""
    pad = _parse_padding(padding)
    passes = _passes(f, gain, g) or _identity_passes(up, gain, g)
    if not passes:
        g = _pad_or_crop(g, -pad[0], -pad[1], -pad[2], -pad[3])
        return g * gain if gain != 1 else g
    sizes = []
    h, w = shape[-2:]
    for weight, axis in passes:
        sizes.append((h, w))
        if axis != -2:
            w = w * up + pad[0] + pad[1] - weight.shape[-1] + 1
        if axis != -1:
            h = h * up + pad[2] + pad[3] - weight.shape[-2] + 1
    for (weight, axis), size in zip(reversed(passes), reversed(sizes)):
        x0, x1, y0, y1 = _pass_amounts(size, weight, axis, up, pad)
        px, py = max(0, min(-x0, -x1)), max(0, min(-y0, -y1))
        if (x0 + px, x1 + px, y0 + py, y1 + py) != (0, 0, 0, 0):
            g = _pad_or_crop(g, -x0 - px, -x1 - px, -y0 - py, -y1 - py)
        g = F.conv2d(g, weight, stride=_strides(axis, up), padding=(py, px), groups=g.shape[1])
    return g


def _downsample(x: torch.Tensor, f: torch.Tensor | None, down: int, gain: float = 1.0) -> torch.Tensor:
    """Same as ``upfirdn2d_ref(x, f, down=down, gain=gain)``: only the kept pixels are computed."""
    passes = _passes(f, gain, x)
    if not passes:
        x = x[:, :, ::down, ::down]
        return x * gain if gain != 1 else x
    for weight, axis in passes:
        x = F.conv2d(x, weight.flip([2, 3]), stride=_strides(axis, down), groups=x.shape[1])
    return x


def _downsample_adjoint(g: torch.Tensor, shape: torch.Size, f: torch.Tensor | None, down: int) -> torch.Tensor:
    """Vector-Jacobian product of ``_downsample`` (gain 1) for an input of ``shape``."""
    passes = _passes(f, 1.0, g)
    if not passes:
        out = g.new_zeros(shape)
        out[:, :, ::down, ::down] = g
        return out
    sizes = []
    h, w = shape[-2:]
    for weight, axis in passes:
        sizes.append((h, w))
        sy, sx = _strides(axis, down)
        h, w = (h - weight.shape[-2]) // sy + 1, (w - weight.shape[-1]) // sx + 1
    for (weight, axis), (h, w) in zip(reversed(passes), reversed(sizes)):
        sy, sx = _strides(axis, down)
        kh, kw = weight.shape[-2:]
        extra = (h - ((g.shape[-2] - 1) * sy + kh), w - ((g.shape[-1] - 1) * sx + kw))
        g = _conv_transpose_dw(g, weight.flip([2, 3]), (sy, sx), output_padding=extra)
    return g


def upfirdn2d(
    x: torch.Tensor,
    f: torch.Tensor | None,
    up: int = 1,
    down: int = 1,
    padding: int | Padding = 0,
    gain: float = 1.0,
) -> torch.Tensor:
    """Fast equivalent of :func:`upfirdn2d_ref` (differentiable by autograd)."""
    if down == 1:
        return _upsample(x, f, up, padding, gain)
    if up == 1:
        return _downsample(_pad_or_crop(x, *_parse_padding(padding)), f, down, gain)
    return _upsample(x, f, up, padding, gain)[:, :, ::down, ::down]


def _activate_(u: torch.Tensor, gain: float, slope: float, clamp: float | None) -> torch.Tensor:
    """In place: ``clamp(gain * leaky_relu(u, slope))``."""
    u = F.leaky_relu_(u, slope) if slope != 1 else u
    if gain != 1:
        u = u.mul_(gain)
    return u.clamp_(-clamp, clamp) if clamp is not None else u


def _activation_grad_(u: torch.Tensor, gain: float, slope: float, clamp: float | None) -> torch.Tensor:
    """In place: turn pre-activations ``u`` into the derivative of ``_activate_`` at ``u``."""
    inside = None
    if clamp is not None:  # no gradient where the output was clamped (checked first: it rarely is)
        lo, hi = -clamp / (gain * slope), clamp / gain
        # The shortcut reads two numbers on the host: free on the CPU, a device sync per layer elsewhere (15 per
        # image-step of the SG3 plans on CUDA), and a graph break under torch.compile. There the mask is always made.
        if torch.compiler.is_compiling() or u.device.type != "cpu":
            inside = (u <= hi) & (u >= lo)
        else:
            u_min, u_max = torch.aminmax(u)
            if u_min < lo or u_max > hi:
                inside = (u <= hi) & (u >= lo)
    u = u.gt_(0).mul_(gain * (1 - slope)).add_(gain * slope)
    return u.mul_(inside) if inside is not None else u


class _FilteredLReLU(torch.autograd.Function):
    """Bias + upsample + leaky ReLU + downsample; backward recomputes the upsampled tensor."""

    @staticmethod
    def forward(ctx, x, b, fu, fd, up, down, padding, gain, slope, clamp):  # noqa: D102
        xb = x if b is None else x + b.reshape(1, -1, 1, 1)
        u = _activate_(_upsample(xb, fu, up, padding, up**2), gain, slope, clamp)
        u_shape = u.shape
        y = _downsample(u, fd, down)
        ctx.save_for_backward(x, b, fu, fd)
        ctx.args = (up, down, padding, gain, slope, clamp, u_shape)
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, gy):  # noqa: D102
        x, b, fu, fd = ctx.saved_tensors
        up, down, padding, gain, slope, clamp, u_shape = ctx.args
        xb = x if b is None else x + b.reshape(1, -1, 1, 1)
        deriv = _activation_grad_(_upsample(xb, fu, up, padding, up**2), gain, slope, clamp)
        ga = _downsample_adjoint(gy.contiguous(), u_shape, fd, down).mul_(deriv)
        del deriv
        gx = _upsample_adjoint(ga, x.shape, fu, up, padding, up**2)
        gb = gx.sum(dim=[0, 2, 3]) if b is not None and ctx.needs_input_grad[1] else None
        return gx, gb, None, None, None, None, None, None, None, None


def filtered_lrelu(
    x: torch.Tensor,
    fu: torch.Tensor | None,
    fd: torch.Tensor | None,
    b: torch.Tensor | None = None,
    up: int = 1,
    down: int = 1,
    padding: int | Padding = 0,
    gain: float = math.sqrt(2),
    slope: float = 0.2,
    clamp: float | None = None,
) -> torch.Tensor:
    """Fast equivalent of :func:`filtered_lrelu_ref`; x: [N, C, H, W]."""
    return _FilteredLReLU.apply(x, b, fu, fd, up, down, _parse_padding(padding), gain, slope, clamp)
