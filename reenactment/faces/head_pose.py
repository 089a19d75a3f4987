"""Head pose (yaw, pitch, roll) from 68 iBUG landmarks, fitted to a 3D mean face by least squares.

Camera frame (OpenCV's): x to the image right, y down, z away from the camera; the 3D face model is in the same
frame when frontal. The rotation is ``R = Rz(roll) @ Ry(yaw) @ Rx(pitch)`` and a pose is fitted by scaled
orthographic (weak-perspective) projection, ``p_i = s * (R X_i)[:2] + t``, which suits the tight, centred crops the
metrics see (the face's depth is small against its distance from the camera). Signs, as seen in the image:

- yaw > 0: the face turns towards the image left (the subject's right);
- pitch > 0: the face tilts down (the chin towards the chest);
- roll > 0: the face rotates clockwise on screen.

The 3D model (``FACE_MODEL_68``) is the mean of six neutral, frontal London photos in ``../shared/samples``
(Face Research Lab London Set, DeBruine & Jones 2017, CC BY 4.0): x, y from dlib's 68 points (the detector the
metric uses, so the model matches its annotation style), depth z from MediaPipe's face mesh (``mediapipe==0.10.21``,
the vertices of ``MEDIAPIPE_TO_IBUG``), aligned by Procrustes and made left-right symmetric, in units of the
inter-ocular distance. The wheel does not ship MediaPipe's canonical face model (``canonical_face_model.obj`` or
``geometry_pipeline_metadata_landmarks.binarypb``), so the mesh network's own depth output stands in for it.
``scripts/fit_face_model_3d.py`` re-derives the table. Yaw and roll 0 are the symmetric pose; pitch 0 is the mean
head orientation of those frontal studio portraits.

Only points that move little with expression and head turn enter the fit (``POSE_POINTS``: the upper jaw ends
near the ears, the nose, the eye corners); brows, lids, lips and the chin move with the face's expression.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# iBUG 68 left-right mirror: point i of a face is point MIRROR_68[i] of its mirror image.
MIRROR_68: tuple[int, ...] = (
    *range(16, -1, -1),  # jaw
    *range(26, 16, -1),  # brows
    27, 28, 29, 30, 35, 34, 33, 32, 31,  # nose bridge, nostrils
    45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40,  # eyes
    54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55,  # outer lip
    64, 63, 62, 61, 60, 67, 66, 65,  # inner lip
)  # fmt: skip

POSE_POINTS: tuple[int, ...] = (0, 1, 15, 16, *range(27, 36), 36, 39, 42, 45)

# [68, 3] (x, y, z): units of the inter-ocular distance (eye-contour centres 1 apart), origin at the mean of the
# 68 points; x right, y down, z away from the camera. Written by scripts/fit_face_model_3d.py.
FACE_MODEL_68 = np.array(
    [
        [-1.1139, -0.5069, 0.8971],
        [-1.0963, -0.2141, 0.9540],
        [-1.0651, 0.0709, 0.6858],
        [-1.0130, 0.3575, 0.5214],
        [-0.9220, 0.6268, 0.4954],
        [-0.7646, 0.8530, 0.4228],
        [-0.5448, 1.0305, 0.1618],
        [-0.2902, 1.1614, 0.0026],
        [0.0000, 1.1997, -0.0649],
        [0.2902, 1.1614, 0.0026],
        [0.5448, 1.0305, 0.1618],
        [0.7646, 0.8530, 0.4228],
        [0.9220, 0.6268, 0.4954],
        [1.0130, 0.3575, 0.5214],
        [1.0651, 0.0709, 0.6858],
        [1.0963, -0.2141, 0.9540],
        [1.1139, -0.5069, 0.8971],
        [-0.9207, -0.7896, 0.2014],
        [-0.7907, -0.9390, 0.0228],
        [-0.5914, -0.9969, -0.0791],
        [-0.3859, -0.9734, -0.1708],
        [-0.1950, -0.8970, -0.2016],
        [0.1950, -0.8970, -0.2016],
        [0.3859, -0.9734, -0.1708],
        [0.5914, -0.9969, -0.0791],
        [0.7907, -0.9390, 0.0228],
        [0.9207, -0.7896, 0.2014],
        [0.0000, -0.6379, -0.2158],
        [0.0000, -0.4729, -0.3316],
        [0.0000, -0.3111, -0.5120],
        [0.0000, -0.1397, -0.6023],
        [-0.2122, 0.0467, -0.2868],
        [-0.1082, 0.0717, -0.3566],
        [0.0000, 0.0934, -0.3403],
        [0.1082, 0.0717, -0.3566],
        [0.2122, 0.0467, -0.2868],
        [-0.6903, -0.5738, 0.1002],
        [-0.5736, -0.6537, 0.0113],
        [-0.4240, -0.6494, -0.0119],
        [-0.2968, -0.5516, 0.0099],
        [-0.4327, -0.5150, 0.0021],
        [-0.5825, -0.5125, 0.0295],
        [0.2968, -0.5516, 0.0099],
        [0.4240, -0.6494, -0.0119],
        [0.5736, -0.6537, 0.0113],
        [0.6903, -0.5738, 0.1002],
        [0.5825, -0.5125, 0.0295],
        [0.4327, -0.5150, 0.0021],
        [-0.4139, 0.4734, -0.0681],
        [-0.2523, 0.3783, -0.2495],
        [-0.1020, 0.3230, -0.3391],
        [0.0000, 0.3518, -0.3472],
        [0.1020, 0.3230, -0.3391],
        [0.2523, 0.3783, -0.2495],
        [0.4139, 0.4734, -0.0681],
        [0.2551, 0.5724, -0.2200],
        [0.1099, 0.6112, -0.2859],
        [0.0000, 0.6188, -0.2929],
        [-0.1099, 0.6112, -0.2859],
        [-0.2551, 0.5724, -0.2200],
        [-0.3397, 0.4757, -0.1206],
        [-0.1040, 0.4520, -0.2563],
        [0.0000, 0.4584, -0.2680],
        [0.1040, 0.4520, -0.2563],
        [0.3397, 0.4757, -0.1206],
        [0.1041, 0.4551, -0.2521],
        [0.0000, 0.4658, -0.2643],
        [-0.1041, 0.4551, -0.2521],
    ],
    dtype=np.float64,
)


@dataclass(frozen=True)
class HeadPose:
    """A fitted pose: angles in degrees, ``rotation`` [3, 3], ``scale`` (pixels per model unit, i.e. about the
    inter-ocular distance in pixels), ``translation`` [2] pixels, ``residual`` RMS reprojection error in pixels."""

    yaw: float
    pitch: float
    roll: float
    rotation: np.ndarray
    scale: float
    translation: np.ndarray
    residual: float

    @property
    def angles(self) -> np.ndarray:
        """[yaw, pitch, roll] in degrees."""
        return np.array([self.yaw, self.pitch, self.roll])


def rotation_matrix(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """``Rz(roll) @ Ry(yaw) @ Rx(pitch)`` from angles in degrees (see the module docstring for the signs)."""
    y, p, r = np.radians([yaw, pitch, roll])
    rx = np.array([[1, 0, 0], [0, np.cos(p), -np.sin(p)], [0, np.sin(p), np.cos(p)]])
    ry = np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0], [-np.sin(y), 0, np.cos(y)]])
    rz = np.array([[np.cos(r), -np.sin(r), 0], [np.sin(r), np.cos(r), 0], [0, 0, 1]])
    return rz @ ry @ rx


def euler_angles(rotation: np.ndarray) -> tuple[float, float, float]:
    """(yaw, pitch, roll) in degrees of ``rotation = Rz(roll) @ Ry(yaw) @ Rx(pitch)``, yaw in [-90, 90]."""
    r = np.asarray(rotation, dtype=np.float64)
    yaw = np.arcsin(np.clip(-r[2, 0], -1.0, 1.0))
    pitch = np.arctan2(r[2, 1], r[2, 2])
    roll = np.arctan2(r[1, 0], r[0, 0])
    return tuple(float(a) for a in np.degrees([yaw, pitch, roll]))


def project(model: np.ndarray, rotation: np.ndarray, scale: float, translation: np.ndarray) -> np.ndarray:
    """Weak-perspective projection of [K, 3] model points: ``scale * (R X)[:, :2] + translation`` -> [K, 2]."""
    return scale * (np.asarray(model) @ np.asarray(rotation).T)[:, :2] + np.asarray(translation)


def _rotvec_to_matrix(v: np.ndarray) -> np.ndarray:
    theta = np.linalg.norm(v)
    if theta < 1e-12:
        return np.eye(3)
    k = v / theta
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + np.sin(theta) * kx + (1 - np.cos(theta)) * kx @ kx


def _matrix_to_rotvec(r: np.ndarray) -> np.ndarray:
    from scipy.spatial.transform import Rotation

    return Rotation.from_matrix(r).as_rotvec()


def estimate_pose(
    points: np.ndarray,
    model: np.ndarray | None = None,
    indices: tuple[int, ...] | None = POSE_POINTS,
) -> HeadPose:
    """Fit a weak-perspective head pose to 2D landmarks.

    ``points``: [68, 2] or [70, 2] (x, y) pixels in the iBUG layout (pupils ignored); ``model``: [68, 3] 3D
    points (default ``FACE_MODEL_68``); ``indices``: the points used (default ``POSE_POINTS``; None = all 68).
    The affine least-squares solution, projected onto the nearest scaled rotation, starts a Levenberg-Marquardt
    refinement of (rotation, scale, translation). Exact (to float precision) for noise-free projections.
    """
    from scipy.optimize import least_squares

    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[0] < 68 or pts.shape[1] != 2:
        raise ValueError(f"need [68 or 70, 2] landmarks, got shape {pts.shape}")
    mdl = FACE_MODEL_68 if model is None else np.asarray(model, dtype=np.float64)
    idx = list(range(68)) if indices is None else list(indices)
    x2, x3 = pts[idx], mdl[idx]
    if not np.isfinite(x2).all():
        raise ValueError("landmarks contain NaN or infinite values")

    # Affine start: p - mean(p) = M (X - mean(X)), M [2, 3]; nearest scaled rotation rows via the SVD.
    c2, c3 = x2.mean(0), x3.mean(0)
    m, *_ = np.linalg.lstsq(x3 - c3, x2 - c2, rcond=None)
    u, sv, vt = np.linalg.svd(m.T, full_matrices=False)  # m.T = [2, 3]
    rows = u @ vt
    r0 = np.vstack([rows, np.cross(rows[0], rows[1])])
    s0 = float(sv.mean())
    t0 = c2 - s0 * (r0 @ c3)[:2]

    def residuals(theta: np.ndarray) -> np.ndarray:
        r = _rotvec_to_matrix(theta[:3])
        return (project(x3, r, np.exp(theta[3]), theta[4:6]) - x2).ravel()

    start = np.concatenate([_matrix_to_rotvec(r0), [np.log(s0)], t0])
    fit = least_squares(residuals, start, method="lm", xtol=1e-12, ftol=1e-12)
    r = _rotvec_to_matrix(fit.x[:3])
    yaw, pitch, roll = euler_angles(r)
    rms = float(np.sqrt(np.mean(fit.fun.reshape(-1, 2) ** 2) * 2))
    return HeadPose(yaw, pitch, roll, r, float(np.exp(fit.x[3])), fit.x[4:6].copy(), rms)


def _kabsch(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Rotation R minimising ||R source_i - target_i|| over centred [K, 3] point sets."""
    u, _, vt = np.linalg.svd(target.T @ source)
    d = np.sign(np.linalg.det(u @ vt))
    return u @ np.diag([1.0, 1.0, d]) @ vt


def _normalise(x: np.ndarray) -> np.ndarray:
    x = x - x.mean(0)
    iod = np.linalg.norm(x[42:48].mean(0) - x[36:42].mean(0))
    return x / iod


def fit_face_model(faces: np.ndarray, iterations: int = 20, level_iterations: int = 3) -> np.ndarray:
    """Mean, left-right symmetric 3D face from several [68, 3] frontal reconstructions whose x, y are the
    image landmarks (pixels; x right, y down) and z the depth in the same units (away from the camera).

    Generalised Procrustes (rotation only, each face scaled to a unit inter-ocular distance); the symmetry plane
    (normal = mean direction from each right-side point to its mirror partner) is rotated onto x = 0 and the
    shape averaged with its mirror image; finally the model is pitched so that ``estimate_pose`` gives the
    input faces a mean pitch of 0. Returns [68, 3], centred, inter-ocular distance 1.
    """
    faces = np.stack([_normalise(np.asarray(f, dtype=np.float64)[:68]) for f in faces])
    mean = faces[0]
    for _ in range(iterations):
        mean = _normalise(np.mean([f @ _kabsch(f, mean).T for f in faces], axis=0))
    mirror = list(MIRROR_68)
    pairs = [(i, j) for i, j in enumerate(mirror) if i < j]
    diffs = np.array([mean[j] - mean[i] for i, j in pairs])
    normal = (diffs * np.sign(diffs[:, :1])).sum(0)  # each pair's vector oriented towards +x
    normal /= np.linalg.norm(normal)
    axis = np.cross(normal, [1.0, 0.0, 0.0])
    angle = np.arctan2(np.linalg.norm(axis), normal[0])
    rot = _rotvec_to_matrix(axis / max(np.linalg.norm(axis), 1e-12) * angle)
    mean = mean @ rot.T
    mean = _normalise((mean + mean[mirror] * np.array([-1.0, 1.0, 1.0])) / 2)
    for _ in range(level_iterations):
        pitch = np.mean([estimate_pose(f[:, :2], mean).pitch for f in faces])
        mean = mean @ rotation_matrix(0.0, pitch, 0.0).T  # about x: the symmetry stays exact
    return mean
