"""The fast ops against the reference ops, and the filter design against NVIDIA's stored filters."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.signal
import torch
from conftest import load_fixture

from stylegan3 import ops
from stylegan3.filters import design_lowpass_filter

torch.manual_seed(0)
KAISER12 = torch.tensor(scipy.signal.firwin(12, 3, width=2, fs=32), dtype=torch.float32)
FILTERS = {
    "none": None,
    "kaiser12": KAISER12,
    "odd5": torch.randn(5, generator=torch.Generator().manual_seed(1)),  # not symmetric: tests flipping
    "radial6": torch.randn(6, 6, generator=torch.Generator().manual_seed(2)),
}


@pytest.mark.parametrize("padding", [0, [3, 2, 4, 1], [-2, 5, 1, -3], [11, 10, 11, 10]])
@pytest.mark.parametrize("up", [1, 2, 4])
@pytest.mark.parametrize("fname", list(FILTERS))
def test_upfirdn2d_up_matches_reference(fname: str, up: int, padding) -> None:
    x = torch.randn(2, 3, 24, 26)
    f = FILTERS[fname]
    ref = ops.upfirdn2d_ref(x, f, up=up, padding=padding, gain=up * up)
    fast = ops.upfirdn2d(x, f, up=up, padding=padding, gain=up * up)
    assert fast.shape == ref.shape
    torch.testing.assert_close(fast, ref, rtol=0, atol=1e-5 * ref.abs().max().item())


@pytest.mark.parametrize("down", [1, 2, 4])
@pytest.mark.parametrize("fname", list(FILTERS))
def test_upfirdn2d_down_matches_reference(fname: str, down: int) -> None:
    x = torch.randn(2, 3, 24, 26)
    f = FILTERS[fname]
    ref = ops.upfirdn2d_ref(x, f, down=down, padding=[1, 2, 3, 0], gain=2.0)
    fast = ops.upfirdn2d(x, f, down=down, padding=[1, 2, 3, 0], gain=2.0)
    assert fast.shape == ref.shape
    torch.testing.assert_close(fast, ref, rtol=0, atol=1e-5 * ref.abs().max().item())


CASES = [  # fu, fd, up, down, padding: the layer kinds of StyleGAN3 plus odd ones
    ("kaiser12", "kaiser12", 2, 2, [11, 10, 11, 10]),
    ("kaiser12", "radial6", 2, 2, [-9, -10, -9, -10]),
    ("odd5", "radial6", 4, 2, [7, 3, 2, 9]),
    ("none", "none", 1, 1, 0),
    ("kaiser12", "none", 2, 1, [-1, 3, 2, 2]),
    ("none", "radial6", 1, 2, [1, 1, 1, 1]),
]


@pytest.mark.parametrize("clamp", [None, 0.5])
@pytest.mark.parametrize("case", CASES, ids=[f"{c[0]}-{c[1]}-up{c[2]}-down{c[3]}" for c in CASES])
def test_filtered_lrelu_matches_reference(case, clamp) -> None:
    fu, fd, up, down, padding = case
    x = torch.randn(2, 3, 24, 26, requires_grad=True)
    b = torch.randn(3, requires_grad=True)
    args = (FILTERS[fu], FILTERS[fd], b, up, down, padding)
    ref = ops.filtered_lrelu_ref(x, *args, clamp=clamp)
    fast = ops.filtered_lrelu(x, *args, clamp=clamp)
    assert fast.shape == ref.shape
    scale = ref.abs().max().item()
    torch.testing.assert_close(fast, ref, rtol=0, atol=1e-5 * scale)
    g = torch.randn_like(ref)
    ref_grads = torch.autograd.grad(ref, [x, b], g)
    fast_grads = torch.autograd.grad(fast, [x, b], g)
    for ours, theirs in zip(fast_grads, ref_grads):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5 * theirs.abs().max().item())


def test_filtered_lrelu_gradcheck() -> None:
    x = torch.randn(1, 2, 9, 8, dtype=torch.float64, requires_grad=True)
    b = torch.randn(2, dtype=torch.float64, requires_grad=True)
    fu, fd = KAISER12.double(), FILTERS["radial6"].double()

    def fn(x, b):
        return ops.filtered_lrelu(x, fu, fd, b, up=2, down=2, padding=[5, 4, 3, 6], clamp=0.7)

    assert torch.autograd.gradcheck(fn, (x, b))


def test_filtered_lrelu_backward_keeps_no_upsampled_tensor() -> None:
    """The fast op saves only its input for backward, not the 4x larger upsampled activation."""
    x = torch.randn(1, 4, 32, 32, requires_grad=True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel()) or t, lambda t: t):
        ops.filtered_lrelu(x, KAISER12, KAISER12, None, up=2, down=2, padding=[11, 10, 11, 10])
    assert max(saved) <= x.numel()
    saved.clear()
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel()) or t, lambda t: t):
        ops.filtered_lrelu_ref(x, KAISER12, KAISER12, None, up=2, down=2, padding=[11, 10, 11, 10])
    assert max(saved) >= 4 * x.numel()


@pytest.mark.parametrize("name", ["sg3r_64", "sg3t_1024_thin", "sg3r_1024_thin"])
def test_filter_design_reproduces_nvidia_filters(name: str) -> None:
    """A network built from the pickle's kwargs designs the same filters NVIDIA stored."""
    G = load_fixture(name)
    for layer_name in G.synthesis.layer_names:
        layer = getattr(G.synthesis, layer_name)
        for kind in ("up", "down"):
            stored = getattr(layer, f"{kind}_filter")
            taps = getattr(layer, f"{kind}_taps")
            if kind == "up":
                ours = design_lowpass_filter(taps, layer.in_cutoff, layer.in_half_width * 2, layer.tmp_sampling_rate)
            else:
                ours = design_lowpass_filter(
                    taps, layer.out_cutoff, layer.out_half_width * 2, layer.tmp_sampling_rate, radial=layer.down_radial
                )
            if stored is None:
                assert ours is None
            else:
                np.testing.assert_allclose(ours.numpy(), stored.numpy(), rtol=0, atol=1e-7)


@pytest.mark.parametrize("case", CASES[:3], ids=[f"{c[0]}-{c[1]}-up{c[2]}-down{c[3]}" for c in CASES[:3]])
def test_explicit_zero_strategy_matches_reference(case, monkeypatch: pytest.MonkeyPatch) -> None:
    """The CUDA formulation of transposed convolutions, run on the CPU, gives the same numbers."""
    monkeypatch.setattr(ops, "EXPLICIT_ZEROS_DEVICES", {"cpu", "cuda"})
    fu, fd, up, down, padding = case
    x = torch.randn(2, 3, 24, 26, requires_grad=True)
    args = (FILTERS[fu], FILTERS[fd], None, up, down, padding)
    ref = ops.filtered_lrelu_ref(x, *args, clamp=0.5)
    fast = ops.filtered_lrelu(x, *args, clamp=0.5)
    torch.testing.assert_close(fast, ref, rtol=0, atol=1e-5 * ref.abs().max().item())
    g = torch.randn_like(ref)
    (ref_grad,) = torch.autograd.grad(ref, [x], g)
    (fast_grad,) = torch.autograd.grad(fast, [x], g)
    torch.testing.assert_close(fast_grad, ref_grad, rtol=0, atol=1e-5 * ref_grad.abs().max().item())
    up_ref = ops.upfirdn2d_ref(x, FILTERS["odd5"], up=4, padding=[-2, -5, 3, -1], gain=16)
    up_fast = ops.upfirdn2d(x, FILTERS["odd5"], up=4, padding=[-2, -5, 3, -1], gain=16)
    torch.testing.assert_close(up_fast, up_ref, rtol=0, atol=1e-5 * up_ref.abs().max().item())
