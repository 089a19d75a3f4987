"""Low-pass filter design for StyleGAN3 layers (Karras et al. 2021, appendix)."""

from __future__ import annotations

import numpy as np
import scipy.signal
import scipy.special
import torch


def design_lowpass_filter(
    numtaps: int, cutoff: float, width: float, fs: float, radial: bool = False
) -> torch.Tensor | None:
    """Kaiser-windowed low-pass filter; ``None`` for a single tap (identity).

    Separable: 1-D ``[numtaps]`` windowed sinc. Radial: 2-D ``[numtaps, numtaps]`` windowed
    jinc (rotation invariant), normalised to unit DC gain.
    """
    if numtaps < 1:
        raise ValueError("numtaps must be >= 1")
    if numtaps == 1:
        return None
    if not radial:
        taps = scipy.signal.firwin(numtaps=numtaps, cutoff=cutoff, width=width, fs=fs)
        return torch.as_tensor(taps, dtype=torch.float32)
    t = (np.arange(numtaps) - (numtaps - 1) / 2) / fs
    r = np.hypot(*np.meshgrid(t, t))
    with np.errstate(invalid="ignore", divide="ignore"):
        jinc = scipy.special.j1(2 * cutoff * (np.pi * r)) / (np.pi * r)
    beta = scipy.signal.kaiser_beta(scipy.signal.kaiser_atten(numtaps, width / (fs / 2)))
    window = np.kaiser(numtaps, beta)
    taps = jinc * np.outer(window, window)
    return torch.as_tensor(taps / np.sum(taps), dtype=torch.float32)
