"""The thesis's evaluation metrics (Tables 4.1, 4.3, 4.4), each a small function with stated inputs.

Image conventions, unless a function says otherwise: ``[N, 3, H, W]`` float tensors in [0, 1] (RGB), the two
batches of one shape, pairs aligned pixel to pixel (the same FFHQ-style crop). Per-image functions return
``[N]`` float64 tensors; a table's figure is their mean over the test set.

- Pixels: ``mse``, ``l1``, ``psnr`` (data range 1, per image in dB), ``ssim`` (Wang et al. 2004: 11x11 Gaussian
  window, sigma 1.5, K1 0.01, K2 0.03, population covariances, per channel over the valid region, averaged;
  equal to ``skimage.metrics.structural_similarity(..., gaussian_weights=True, use_sample_covariance=False,
  data_range=1, channel_axis=...)``).
- Networks, injected so that tests can pass stand-ins: ``lpips_distance`` (LPIPS AlexNet), ``identity_distance``
  (1 - ArcFace cosine), ``inception_features`` + ``frechet_distance`` (FID, pytorch-fid's Inception pool3).
- Landmarks (dlib's 68 points, [68 or 70, 2] pixels): ``landmark_distance`` (LMD), ``rotation_distance``
  (ARD, via ``reenactment.faces.head_pose``), ``action_units`` / ``action_unit_hamming`` (AUH, a landmark-geometry
  approximation: no pretrained action-unit detector can be installed here), ``DlibFaceEmbedder`` (an offline
  identity metric from dlib's 128-d face descriptor).
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..faces.head_pose import estimate_pose
from ..faces.landmarks import inter_ocular_distance

log = logging.getLogger(__name__)

FID_INCEPTION_FILE = "pt_inception-2015-12-05-6726825d.pth"
FID_INCEPTION_URL = f"https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/{FID_INCEPTION_FILE}"
DLIB_EMBEDDING_FILE = "dlib_face_recognition_resnet_model_v1.dat"


def _check_pair(x: torch.Tensor, y: torch.Tensor) -> None:
    if x.ndim != 4 or x.shape != y.shape:
        raise ValueError(f"expected two [N, C, H, W] batches of one shape, got {tuple(x.shape)}, {tuple(y.shape)}")


# ---------------------------------------------------------------------------------------------------------- pixels


def mse(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean squared error per image over pixels and channels: [N, C, H, W] x2 in [0, 1] -> [N]."""
    _check_pair(x, y)
    return (x.double() - y.double()).square().flatten(1).mean(1)


def l1(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean absolute error per image over pixels and channels: [N, C, H, W] x2 in [0, 1] -> [N]."""
    _check_pair(x, y)
    return (x.double() - y.double()).abs().flatten(1).mean(1)


def psnr(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Peak signal-to-noise ratio per image in dB, ``10 log10(data_range^2 / MSE)``: [N, C, H, W] x2 -> [N].

    Identical images give +inf. Inputs in [0, data_range]."""
    return 10.0 * torch.log10(data_range**2 / mse(x, y))


def _gaussian_taps(sigma: float, radius: int) -> np.ndarray:
    t = np.arange(-radius, radius + 1, dtype=np.float64)
    g = np.exp(-(t**2) / (2 * sigma**2))
    return g / g.sum()


def ssim(
    x: torch.Tensor,
    y: torch.Tensor,
    data_range: float = 1.0,  # value range of the inputs (1 for [0, 1])
    sigma: float = 1.5,  # Gaussian window; 11 taps at the default
    k1: float = 0.01,
    k2: float = 0.03,
) -> torch.Tensor:
    """Structural similarity per image: [N, C, H, W] x2 in [0, data_range] -> [N] (1 for identical images).

    Wang et al. 2004 with a Gaussian window (radius ``int(3.5 sigma + 0.5)``, 5 at sigma 1.5: 11x11) and
    population covariances; local SSIM over the valid region (no padding; the same as scikit-image, which
    filters with reflection and then drops a window radius at each border), averaged over pixels and channels.
    Computed in float64 with scipy's separable filters on the CPU (several times faster there than torch's
    single-channel convolutions); the result is on the inputs' device. Images must be at least 11x11.
    """
    from scipy.ndimage import correlate1d

    _check_pair(x, y)
    n, c, h, w = x.shape
    radius = int(3.5 * sigma + 0.5)
    if min(h, w) < 2 * radius + 1:
        raise ValueError(f"SSIM needs images of at least {2 * radius + 1}x{2 * radius + 1}, got {h}x{w}")
    taps = _gaussian_taps(sigma, radius)

    def blur(t: np.ndarray) -> np.ndarray:
        t = correlate1d(correlate1d(t, taps, axis=-1, mode="nearest"), taps, axis=-2, mode="nearest")
        return t[..., radius : h - radius, radius : w - radius]  # the valid region: no border value enters

    a = x.detach().cpu().double().numpy()
    b = y.detach().cpu().double().numpy()
    ua, ub = blur(a), blur(b)
    va = blur(a * a) - ua * ua
    vb = blur(b * b) - ub * ub
    vab = blur(a * b) - ua * ub
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    s = ((2 * ua * ub + c1) * (2 * vab + c2)) / ((ua * ua + ub * ub + c1) * (va + vb + c2))
    return torch.from_numpy(s.reshape(n, -1).mean(1)).to(x.device)


# -------------------------------------------------------------------------------------------------------- networks


def lpips_distance(x: torch.Tensor, y: torch.Tensor, net: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]):
    """LPIPS per image: [N, 3, H, W] x2 in [0, 1] -> [N]; ``net(a, b)`` takes [-1, 1] images (as
    ``inversion.perceptual.LPIPS`` does). The caller picks the resolution (the evaluation uses 256x256)."""
    _check_pair(x, y)
    with torch.no_grad():
        return net(x * 2 - 1, y * 2 - 1).double().reshape(x.shape[0])


def identity_distance(
    x: torch.Tensor, y: torch.Tensor, encoder: Callable[[torch.Tensor], torch.Tensor]
) -> torch.Tensor:
    """ID = 1 - cos(R(x), R(y)) per image: [N, 3, S, S] x2 in [0, 1], FFHQ-aligned -> [N] in [0, 2].

    ``encoder`` maps [-1, 1] images to [N, D] embeddings (``inversion.arcface.IdentityEncoder``: ArcFace IR-SE50
    with the pSp crop); the embeddings are normalised here, so any encoder will do. ``y`` may be one image
    ([1, 3, S, S]) for all of ``x``."""
    if x.ndim != 4 or y.ndim != 4 or y.shape[0] not in (1, x.shape[0]):
        raise ValueError(f"expected [N, 3, S, S] and [N or 1, 3, S, S], got {tuple(x.shape)}, {tuple(y.shape)}")
    with torch.no_grad():
        ex = F.normalize(encoder(x * 2 - 1).double(), dim=1)
        ey = F.normalize(encoder(y * 2 - 1).double(), dim=1)
    return 1.0 - (ex * ey).sum(1)


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, eps: float = 1e-6
) -> float:
    """Frechet distance between N(mu1, sigma1) and N(mu2, sigma2):
    ``|mu1 - mu2|^2 + tr(sigma1 + sigma2 - 2 (sigma1 sigma2)^(1/2))``.

    The matrix square root is ``scipy.linalg.sqrtm``; when the product is singular enough that it is not finite,
    ``eps`` is added to both diagonals first, and an imaginary part left by rounding is dropped (an error if
    its diagonal exceeds 1e-3), as pytorch-fid and the TensorFlow original do. With fewer samples than
    dimensions (under 2048 images for FID) the covariances are singular; the result is still what the
    field reports. O(D^3): about half a minute for D = 2048 on two CPU cores.
    """
    from scipy import linalg

    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (mu1.size, mu1.size):
        raise ValueError(f"shapes do not match: mu {mu1.shape}, {mu2.shape}; sigma {sigma1.shape}, {sigma2.shape}")
    with warnings.catch_warnings():  # "matrix is singular": expected below D samples, handled below
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        covmean = linalg.sqrtm(sigma1 @ sigma2)
        if not np.isfinite(covmean).all():
            log.warning("Frechet distance: singular covariance product; adding %g to the diagonals", eps)
            offset = np.eye(sigma1.shape[0]) * eps
            covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"Frechet distance: imaginary component {np.abs(covmean.imag).max():.3g} in sqrtm")
        covmean = covmean.real
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean [D] and covariance [D, D] (unbiased, as pytorch-fid) of [N >= 2, D] features."""
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"need [N >= 2, D] features, got shape {f.shape}")
    return f.mean(0), np.cov(f, rowvar=False)


def fid_from_features(real: np.ndarray, fake: np.ndarray) -> float:
    """FID between two sets of [N, D] Inception features (the sets may differ in size)."""
    return frechet_distance(*feature_statistics(real), *feature_statistics(fake))


def fid_inception3() -> torch.nn.Module:
    """torchvision's Inception3 (1008 classes, no auxiliary head, not initialised beyond PyTorch's defaults) with
    pytorch-fid's ``FIDInceptionA/C/E_1/E_2`` in place of its mixed blocks: the layout of pytorch-fid's weights
    file (``Conv2d_1a_3x3.conv.weight``, ..., ``fc.bias``)."""
    import torchvision
    from pytorch_fid.inception import FIDInceptionA, FIDInceptionC, FIDInceptionE_1, FIDInceptionE_2

    net = torchvision.models.inception_v3(weights=None, num_classes=1008, aux_logits=False, init_weights=False)
    net.Mixed_5b = FIDInceptionA(192, pool_features=32)
    net.Mixed_5c = FIDInceptionA(256, pool_features=64)
    net.Mixed_5d = FIDInceptionA(288, pool_features=64)
    net.Mixed_6b = FIDInceptionC(768, channels_7x7=128)
    net.Mixed_6c = FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6d = FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6e = FIDInceptionC(768, channels_7x7=192)
    net.Mixed_7b = FIDInceptionE_1(1280)
    net.Mixed_7c = FIDInceptionE_2(2048)
    return net


class FIDInception(torch.nn.Module):
    """pytorch-fid's FID Inception-v3 feature network, assembled here from its public blocks without its loader.

    ``fid_inception3()`` (loaded strictly from ``state``, a weights file's layout, when given) cut into
    pytorch-fid's four stages: ``blocks[i]`` ends at the features of ``BLOCK_DIMS[i]`` channels (the last,
    2048-d, is pool3). ``forward([N, 3, H, W] in [0, 1])`` returns
    ``[features of the last block built]``, resized to 299x299 first (``resize_input``) and scaled to [-1, 1],
    as pytorch-fid's ``InceptionV3`` does, so the two give the same numbers for the same weights.
    """

    BLOCK_DIMS = (64, 192, 768, 2048)

    def __init__(self, state: dict[str, torch.Tensor] | None = None, dims: int = 2048) -> None:
        super().__init__()
        if dims not in self.BLOCK_DIMS:
            raise ValueError(f"dims must be one of {self.BLOCK_DIMS}, got {dims}")
        net = fid_inception3()
        if state is not None:
            net.load_state_dict(state)  # strict: the release's keys include the classifier's fc
        pool = torch.nn.MaxPool2d(kernel_size=3, stride=2)
        stages = [
            [net.Conv2d_1a_3x3, net.Conv2d_2a_3x3, net.Conv2d_2b_3x3, pool],
            [net.Conv2d_3b_1x1, net.Conv2d_4a_3x3, torch.nn.MaxPool2d(kernel_size=3, stride=2)],
            [net.Mixed_5b, net.Mixed_5c, net.Mixed_5d, net.Mixed_6a, net.Mixed_6b, net.Mixed_6c, net.Mixed_6d,
             net.Mixed_6e],
            [net.Mixed_7a, net.Mixed_7b, net.Mixed_7c, torch.nn.AdaptiveAvgPool2d(output_size=(1, 1))],
        ]  # fmt: skip
        self.blocks = torch.nn.ModuleList(torch.nn.Sequential(*s) for s in stages[: self.BLOCK_DIMS.index(dims) + 1])
        self.resize_input = True  # bilinear to 299x299 first, as pytorch-fid does
        self.requires_grad_(False)

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        x = images
        if self.resize_input:
            x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        x = 2 * x - 1
        for block in self.blocks:
            x = block(x)
        return [x]


def load_fid_inception(
    path: str | os.PathLike | None = None,
    device: torch.device | str = "cpu",
    random_weights: bool = False,  # tests only: keep the random initialisation, read no file
    dims: int = 2048,  # 2048: pool3, FID's features; 64, 192, 768: earlier blocks (tests, quick looks)
) -> torch.nn.Module:
    """pytorch-fid's FID Inception-v3 (the TensorFlow FID graph's weights; ``FIDInception``), returning pool3
    features by default.

    The weights file ``pt_inception-2015-12-05-6726825d.pth`` is ``path``, or ``$REENACT_CACHE/fid/``, downloaded
    there once from pytorch-fid's release when allowed (``stylegan3.fetch_weights``; ``WeightsNotFoundError``
    otherwise). pytorch-fid's own loader would download it through torch hub: the network is assembled from its
    blocks instead, and the file is read with ``torch.load(weights_only=True)`` and loaded strictly.
    """
    from stylegan3 import WeightsFileError, fetch_weights
    from stylegan3.io import read_state_dict

    if random_weights:
        return FIDInception(None, dims).eval().to(device)
    file = fetch_weights(
        FID_INCEPTION_FILE, "fid", url=FID_INCEPTION_URL, path=path, what="FID Inception weights (pytorch-fid)"
    )
    try:
        net = FIDInception(read_state_dict(file), dims)
    except RuntimeError as err:  # load_state_dict's strict check: missing, unexpected or mis-shaped entries
        raise WeightsFileError(file, f"weights do not match the FID Inception network ({err})") from err
    return net.eval().to(device)


def inception_features(images: torch.Tensor, net: torch.nn.Module) -> np.ndarray:
    """[N, 3, H, W] in [0, 1] -> [N, D] float64 features (D = 2048, pool3, for FID). pytorch-fid's network resizes
    to 299x299 (bilinear) and rescales to [-1, 1] itself; any net returning a list whose first item is
    [N, D, h, w] works (spatial maps are averaged, as pytorch-fid does for its earlier blocks)."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected [N, 3, H, W] images, got {tuple(images.shape)}")
    with torch.no_grad():
        out = net(images.float())[0]
    if out.shape[-2:] != (1, 1):
        out = F.adaptive_avg_pool2d(out, 1)
    return out.reshape(images.shape[0], -1).double().cpu().numpy()


# ------------------------------------------------------------------------------------------------------- landmarks


def landmark_distance(
    points_a: np.ndarray,
    points_b: np.ndarray,
    image_size_a: tuple[int, int],  # (height, width) of the image points_a were detected in
    image_size_b: tuple[int, int],
    size: int = 256,  # the resolution the distance is measured at
) -> float:
    """LMD: mean Euclidean distance over the 68 iBUG points, in pixels of a ``size`` x ``size`` image.

    Each point set is first scaled from its image to ``size`` x ``size`` (as if both images were resized there),
    so outputs and ground truth of different resolutions compare. Pixel-centre convention. Pupils are ignored.
    """
    a = np.asarray(points_a, np.float64)[:68]
    b = np.asarray(points_b, np.float64)[:68]
    if a.shape != (68, 2) or b.shape != (68, 2):
        raise ValueError(f"need [68 or 70, 2] landmarks, got {np.shape(points_a)}, {np.shape(points_b)}")

    def scaled(p: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
        h, w = hw
        return (p + 0.5) * np.array([size / w, size / h]) - 0.5

    return float(np.linalg.norm(scaled(a, image_size_a) - scaled(b, image_size_b), axis=1).mean())


def rotation_distance(points_a: np.ndarray, points_b: np.ndarray) -> np.ndarray:
    """Absolute head-pose differences [|d yaw|, |d pitch|, |d roll|] in degrees between two [68 or 70, 2] landmark
    sets (``reenactment.faces.head_pose.estimate_pose`` on each); ARD is their mean over the angles and the pairs."""
    return np.abs(estimate_pose(points_a).angles - estimate_pose(points_b).angles)


@dataclass(frozen=True)
class ActionUnit:
    """One facial action unit as a landmark rule: present when ``feature`` is above (``above=True``) or below
    ``threshold``. Features are distances in units of the inter-ocular distance (see ``action_unit_features``)."""

    name: str
    description: str
    feature: str
    above: bool
    threshold: float


# Thresholds picked on the sample photos and GRID clips (neutral vs smiling London faces, speaking GRID frames):
# see tests/test_metrics.py. Absolute thresholds ignore a person's own resting face (brow height, lip width), so
# two people making the same expression can still differ here.
ACTION_UNITS: tuple[ActionUnit, ...] = (
    ActionUnit("AU1", "inner brow raiser", "inner_brow_height", True, 0.45),
    ActionUnit("AU2", "outer brow raiser", "outer_brow_height", True, 0.38),
    ActionUnit("AU4", "brow lowerer", "inner_brow_height", False, 0.22),
    ActionUnit("AU12", "lip corner puller", "smile", True, 0.0),
    ActionUnit("AU15", "lip corner depressor", "lip_corner_drop", True, 0.06),
    ActionUnit("AU25", "lips part", "lip_gap", True, 0.05),
    ActionUnit("AU26", "jaw drop", "lip_gap", True, 0.15),
    ActionUnit("AU45", "blink / eyes closed", "eye_openness", False, 0.20),
)
SMILE_WIDTH = 0.90  # AU12: mouth corners further apart than this (x inter-ocular distance) ...
SMILE_LIFT = 0.05  # ... or lifted this far above the lips' centre


def action_unit_features(points: np.ndarray) -> dict[str, float]:
    """Expression geometry of one face, from [68 or 70, 2] iBUG points, in units of the inter-ocular distance.

    "Up" is perpendicular to the eye line, so in-plane head roll does not change the figures.

    - ``inner_brow_height`` / ``outer_brow_height``: brow ends (21, 22 / 17, 26) above the eye corners
      (39, 42 / 36, 45), mean of both sides;
    - ``mouth_width``: lip corners 48-54; ``lip_corner_lift``: corners above the middle of the inner lips
      (62, 66); ``lip_corner_drop`` = -lift; ``smile``: 1 if width > ``SMILE_WIDTH`` or lift > ``SMILE_LIFT``;
    - ``lip_gap``: inner lips 62-66 apart;
    - ``eye_openness``: eye aspect ratio (Soukupova & Cech 2016), lid gaps over eye width, mean of both eyes.
    """
    p = np.asarray(points, np.float64)[:68]
    iod = float(inter_ocular_distance(p))
    eye_r, eye_l = p[36:42].mean(0), p[42:48].mean(0)
    right = (eye_l - eye_r) / np.linalg.norm(eye_l - eye_r)
    down = np.array([-right[1], right[0]])  # image y grows downwards

    def above(upper: int, lower: int) -> float:
        return float((p[lower] - p[upper]) @ down) / iod

    def ear(e: int) -> float:
        lids = np.linalg.norm(p[e + 1] - p[e + 5]) + np.linalg.norm(p[e + 2] - p[e + 4])
        return float(lids / (2 * np.linalg.norm(p[e] - p[e + 3])))

    width = float(np.linalg.norm(p[54] - p[48])) / iod
    lift = float(((p[62] + p[66]) / 2 - (p[48] + p[54]) / 2) @ down) / iod
    return {
        "inner_brow_height": (above(21, 39) + above(22, 42)) / 2,
        "outer_brow_height": (above(17, 36) + above(26, 45)) / 2,
        "mouth_width": width,
        "lip_corner_lift": lift,
        "lip_corner_drop": -lift,
        "smile": float(width > SMILE_WIDTH or lift > SMILE_LIFT),
        "lip_gap": float(np.linalg.norm(p[66] - p[62])) / iod,
        "eye_openness": (ear(36) + ear(42)) / 2,
    }


def action_units(points: np.ndarray, units: tuple[ActionUnit, ...] = ACTION_UNITS) -> np.ndarray:
    """Presence of each action unit in ``units`` (landmark approximation): [68 or 70, 2] points -> bool [K]."""
    f = action_unit_features(points)
    return np.array([(f[u.feature] > u.threshold) if u.above else (f[u.feature] < u.threshold) for u in units])


def action_unit_hamming(points_a: np.ndarray, points_b: np.ndarray, units: tuple[ActionUnit, ...] = ACTION_UNITS):
    """AUH for one pair: the fraction of ``units`` whose presence differs between the two faces, in [0, 1]."""
    return float(np.mean(action_units(points_a, units) != action_units(points_b, units)))


class DlibFaceEmbedder:
    """dlib's 128-d face descriptor (ResNet, ``dlib_face_recognition_resnet_model_v1.dat`` from
    ``face-recognition-models``): an identity metric that needs no download.

    ``embedder(image, points)``: HxWx3 uint8 RGB and that face's [68 or 70, 2] landmarks (as
    ``LandmarkDetector("dlib")`` returns them) -> [128] float64. dlib aligns its own 150x150 chip from the
    landmarks, so any framing works. Compare with ``embedding_distance`` (Euclidean; dlib's authors use
    0.6 as the same-person threshold on LFW).
    """

    def __init__(self, model_path: str | os.PathLike | None = None, num_jitters: int = 0) -> None:
        import dlib

        from stylegan3 import WeightsNotFoundError

        from ..faces.landmarks import face_recognition_models_dir

        path = Path(model_path) if model_path is not None else face_recognition_models_dir() / DLIB_EMBEDDING_FILE
        if not path.is_file():
            raise WeightsNotFoundError(
                f"dlib face descriptor weights '{path.name}' not found at {path}; reinstall face-recognition-models"
            )
        self._dlib = dlib
        self._model = dlib.face_recognition_model_v1(str(path))
        self.num_jitters = num_jitters

    def __call__(self, image: np.ndarray, points: np.ndarray) -> np.ndarray:
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected an HxWx3 uint8 RGB image, got {image.dtype} {image.shape}")
        pts = np.rint(np.asarray(points, np.float64)[:68]).astype(int)
        (x0, y0), (x1, y1) = pts.min(0), pts.max(0)
        dlib = self._dlib
        shape = dlib.full_object_detection(
            dlib.rectangle(int(x0), int(y0), int(x1), int(y1)), [dlib.point(int(x), int(y)) for x, y in pts]
        )
        descriptor = self._model.compute_face_descriptor(np.ascontiguousarray(image), shape, self.num_jitters)
        return np.asarray(descriptor, dtype=np.float64)


def embedding_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Euclidean distance between two face descriptors (``DlibFaceEmbedder``)."""
    return float(np.linalg.norm(np.asarray(a, np.float64) - np.asarray(b, np.float64)))
