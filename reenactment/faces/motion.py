"""Motion transfer from a driving landmark track onto the source's landmarks (cross-identity reenactment).

Feeding the driving person's own landmarks to the mapper (``motion="absolute"``, the thesis's setting) makes the
source take the driving face's shape too: jaw width, eye spacing, nose length. ``motion="relative"`` transfers
only the driving face's *motion* from a reference frame, as FOMM's ``--relative --adapt_scale`` does for
keypoints, with the head pose handled on its own:

1. Head pose. Each driving frame D_t is split into a similarity P_t (rotation, translation, scale of the whole
   face, fitted on the :data:`STABLE` points) from the reference frame D_r, and the rest, the expression:
   ``E_t = P_t^-1(D_t) - D_r`` (pose removed, in the reference frame's coordinates).
2. Scale to the source. A similarity A, fitted (least squares on the :data:`STABLE` points) from D_r to the
   source's landmarks S, carries the motion over: the expression displacement becomes ``A_lin E_t`` (A's
   rotation and scale only) and the pose change ``Q_t = A P_t A^-1`` (the driving's head motion, about the
   source's face). A similarity fit uses 17 points instead of the two eye centres of an inter-ocular ratio, so
   it is steadier, and it also absorbs a tilt between the two faces.
3. ``target_t = Q_t^(k)(S + motion_scale * M * A_lin E_t)``: M is 1 on the chosen :data:`REGIONS` and 0 elsewhere;
   ``Q^(k)`` is the pose change with its angle, log-scale and shift multiplied by k = ``motion_scale`` (the pose
   transferred) or 0 (the source's pose kept: ``pose="source"``, or ``regions`` without ``pose``/``all``).
   The inner lips are then kept from crossing (a driving mouth that closes more than at its reference would
   push the source's upper lip through the lower one).

``motion="absolute"``: E is replaced by the driving face put at the source's pose (``B_t(D_t) - S``, B_t the
similarity from D_t to S) and Q_t by ``B_t^-1``, so ``motion_scale=1, regions=all, pose=driving`` gives exactly
the driving landmarks, today's behaviour; ``pose="source"`` keeps the driving's shape and expression at the
source's head pose.

The reference frame (relative mode): ``"first"``, a frame number, or ``"best"``: the driving frame whose mouth and
eyes are opened most like the source's (:func:`expression_distance`; FOMM's ``--find_best_frame`` compares all
its keypoints instead). ``best`` is the default: relative motion assumes that the reference frame shows the
expression the source photo shows (usually neutral, mouth closed); from a clip that starts with an open mouth,
the source's mouth could never close.

All landmark arrays are (x, y) pixels in one frame (the generator's aligned frame in the pipeline): ``source``
[70, 2], ``driving`` [T, 70, 2]; the results are float64.
"""

from __future__ import annotations

import numpy as np

from .landmarks import inter_ocular_distance

# Region index sets of the 70-point layout (landmarks.py): defined here once.
JAW = tuple(range(0, 17))
BROWS = tuple(range(17, 27))
NOSE = tuple(range(27, 36))
EYES = (*range(36, 48), 68, 69)  # eye contours and pupils
LIPS = tuple(range(48, 68))  # outer 48-59, inner 60-67
INNER_LIP_PAIRS = ((61, 67), (62, 66), (63, 65))  # (upper, lower) inner-lip points facing each other
STABLE = (0, 1, 15, 16, *NOSE, 36, 39, 42, 45)
"""Points that move little with expressions (jaw ends by the ears, nose, eye corners): the head pose is fitted on
them."""
OPENING_PAIRS = (*INNER_LIP_PAIRS, (37, 41), (38, 40), (43, 47), (44, 46))  # inner lips, eyelids

REGIONS: dict[str, tuple[int, ...]] = {
    "all": tuple(range(70)),
    "expression": tuple(range(70)),  # the non-rigid motion of every point (the chin drops with the mouth)
    "lips": LIPS,
    "eyes": EYES,
    "brows": BROWS,
    "pose": (),  # the head pose only: no point's own motion
}
"""``regions`` names -> the points whose own (pose-free) motion is transferred; ``all`` and ``pose`` also carry the
head pose."""

MOTIONS = ("absolute", "relative")
POSES = ("driving", "source")


def _complex(points: np.ndarray) -> np.ndarray:
    points = np.asarray(points, dtype=np.float64)
    return points[..., 0] + 1j * points[..., 1]


def _real(z: np.ndarray) -> np.ndarray:
    return np.stack([z.real, z.imag], axis=-1)


def fit_similarity(src: np.ndarray, dst: np.ndarray, index: tuple[int, ...] | None = None) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation; no reflection) taking ``src`` to ``dst``.

    Args:
        src, dst: [..., K, 2] points (broadcast against each other).
        index: the points to fit on (default all).

    Returns:
        [..., 2] complex: (a, b) with ``x -> a x + b`` on points as complex numbers x + iy (|a| the scale,
        arg a the angle); see :func:`apply_similarity`.
    """
    zs, zd = _complex(src), _complex(dst)
    if index is not None:
        zs, zd = zs[..., list(index)], zd[..., list(index)]
    ms, md = zs.mean(-1, keepdims=True), zd.mean(-1, keepdims=True)
    cs, cd = zs - ms, zd - md
    a = (np.conj(cs) * cd).sum(-1) / np.maximum((np.abs(cs) ** 2).sum(-1), 1e-12)
    b = md[..., 0] - a * ms[..., 0]
    return np.stack(np.broadcast_arrays(a, b), axis=-1)


def apply_similarity(sim: np.ndarray, points: np.ndarray) -> np.ndarray:
    """[..., 2] complex similarity (:func:`fit_similarity`) applied to [..., K, 2] points -> [..., K, 2]."""
    return _real(sim[..., :1] * _complex(points) + sim[..., 1:])


def invert_similarity(sim: np.ndarray) -> np.ndarray:
    """The inverse of a [..., 2] complex similarity."""
    a, b = sim[..., 0], sim[..., 1]
    return np.stack([1 / a, -b / a], axis=-1)


def compose_similarity(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """``outer(inner(x))`` as one similarity."""
    return np.stack([outer[..., 0] * inner[..., 0], outer[..., 0] * inner[..., 1] + outer[..., 1]], axis=-1)


def scale_similarity(sim: np.ndarray, k: float, centre: np.ndarray) -> np.ndarray:
    """The similarity with its angle, log-scale and the shift of ``centre`` (x, y) multiplied by ``k``: k = 0 is
    the identity, k = 1 ``sim`` itself."""
    c = complex(centre[0], centre[1])
    a, b = sim[..., 0], sim[..., 1]
    a_k = np.exp(k * np.log(a))  # |a|^k e^{i k arg a}, arg in (-pi, pi]
    shift = a * c + b - c
    return np.stack([a_k, c + k * shift - a_k * c], axis=-1)


def openness(points: np.ndarray) -> np.ndarray:
    """How open the mouth and the eyes are: [..., 70, 2] -> [..., 7], the :data:`OPENING_PAIRS` gaps (three
    inner-lip, four eyelid) in inter-ocular distances."""
    points = np.asarray(points, dtype=np.float64)
    upper, lower = (list(side) for side in zip(*OPENING_PAIRS))
    gaps = np.linalg.norm(points[..., upper, :] - points[..., lower, :], axis=-1)
    return gaps / np.asarray(inter_ocular_distance(points))[..., None]


def expression_distance(points: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """How far the expression of [..., 70, 2] landmarks lies from that of ``reference`` [70, 2]: the distance
    between their :func:`openness` vectors, [...].

    Mouth and eye opening are what relative motion needs to match (a reference whose mouth is open would close
    the source's only as far as its own); whole-face distances are swamped by the constant difference between
    two people's shapes: on the shared samples they picked frames up to 0.068 IOD more open than a clip's most
    closed one, this at most 0.012 (``tests/test_motion.py::test_all_sample_pairs``)."""
    return np.linalg.norm(openness(points) - openness(reference), axis=-1)


def reference_frame(reference: str, driving: np.ndarray, source: np.ndarray) -> int:
    """The index of the reference frame: ``"first"``, ``"best"`` (:func:`expression_distance` to the source
    smallest) or a frame number ``"N"`` (0-based; negative counts from the end)."""
    if reference == "first":
        return 0
    if reference == "best":
        return int(np.argmin(expression_distance(driving, source)))
    try:
        index = int(reference)
    except ValueError:
        raise ValueError(f"reference must be first, best or a frame number, got {reference!r}") from None
    if not -len(driving) <= index < len(driving):
        raise ValueError(f"reference frame {index} is outside the driving clip's {len(driving)} frames")
    return index % len(driving)


def parse_regions(regions: str) -> tuple[np.ndarray, bool]:
    """``"lips,eyes"`` -> ([70] bool: the points whose own motion is transferred, whether the head pose is)."""
    names = [name.strip() for name in regions.split(",") if name.strip()]
    unknown = [name for name in names if name not in REGIONS]
    if unknown or not names:
        raise ValueError(
            f"regions: unknown {', '.join(unknown) or '(empty)'}; use a comma list of {', '.join(REGIONS)}"
        )
    mask = np.zeros(70, dtype=bool)
    for name in names:
        mask[list(REGIONS[name])] = True
    return mask, bool({"all", "pose"} & set(names))


def check_motion_options(motion: str, pose: str, reference: str, motion_scale: float, regions: str) -> None:
    """Raise ValueError with a one-line message for a bad motion option (before any work is done)."""
    if motion not in MOTIONS:
        raise ValueError(f"motion must be {' or '.join(MOTIONS)}, got {motion!r}")
    if pose not in POSES:
        raise ValueError(f"pose must be {' or '.join(POSES)}, got {pose!r}")
    if reference not in ("first", "best"):
        try:
            int(reference)
        except ValueError:
            raise ValueError(f"reference must be first, best or a frame number, got {reference!r}") from None
    if not (np.isfinite(motion_scale) and motion_scale >= 0):
        raise ValueError(f"motion_scale must be a number >= 0, got {motion_scale}")
    mask, _ = parse_regions(regions)
    if not mask.any() and pose == "source":
        raise ValueError(
            "regions=pose moves only the head pose, but pose=source keeps the source's: nothing would move"
        )


def uncross_lips(points: np.ndarray, source: np.ndarray) -> np.ndarray:
    """[..., 70, 2] -> the same, with every inner-lip pair whose lower point has risen above its upper one (y grows
    downwards) by more than in ``source`` [70, 2] moved back to that gap about their common middle: closed, not
    crossed (a source whose own lips overlap is left as it is)."""
    out = np.array(points, dtype=np.float64)
    for upper, lower in INNER_LIP_PAIRS:
        floor = min(0.0, float(source[lower, 1] - source[upper, 1]))
        gap = out[..., lower, 1] - out[..., upper, 1]
        middle = (out[..., lower, 1] + out[..., upper, 1]) / 2
        crossed = gap < floor
        out[..., upper, 1] = np.where(crossed, middle - floor / 2, out[..., upper, 1])
        out[..., lower, 1] = np.where(crossed, middle + floor / 2, out[..., lower, 1])
    return out


def transfer_motion(
    source: np.ndarray,
    driving: np.ndarray,
    motion: str = "relative",
    pose: str = "driving",
    reference: str = "best",
    motion_scale: float = 1.0,
    regions: str = "all",
) -> tuple[np.ndarray, int | None]:
    """The landmarks to render for the mapper, frame by frame (see the module docstring for the maths).

    Args:
        source: [70, 2] the source's landmarks.
        driving: [T, 70, 2] the driving landmarks, in the same frame (the generator's aligned frame).
        motion: ``relative`` (the driving's motion from its reference frame, scaled to the source) or
            ``absolute`` (the driving's landmarks).
        pose: ``driving`` (its head pose changes are transferred) or ``source`` (the source's pose is kept).
        reference: ``first``, ``best`` or a frame number (relative mode).
        motion_scale: 0 = the source's landmarks, 1 = as driven, > 1 exaggerated.
        regions: comma list of ``all, expression, lips, eyes, brows, pose``; points outside them keep the source's.

    Returns:
        (target [T, 70, 2] float64, the reference frame's index, or None in absolute mode).
    """
    check_motion_options(motion, pose, reference, motion_scale, regions)
    source = np.asarray(source, dtype=np.float64)
    driving = np.asarray(driving, dtype=np.float64)
    if source.shape != (70, 2) or driving.ndim != 3 or driving.shape[1:] != (70, 2):
        raise ValueError(f"need source [70, 2] and driving [T, 70, 2], got {source.shape} and {driving.shape}")
    mask, with_pose = parse_regions(regions)
    with_pose = with_pose and pose == "driving"
    if motion == "relative":
        ref = reference_frame(reference, driving, source)
        d_ref = driving[ref]
        head = fit_similarity(d_ref, driving, STABLE)  # P_t: [T, 2]
        expression = apply_similarity(invert_similarity(head), driving) - d_ref  # E_t in D_r's coordinates
        to_source = fit_similarity(d_ref, source, STABLE)  # A
        displacement = _real(to_source[0] * _complex(expression))  # A_lin E_t
        pose_change = compose_similarity(to_source, compose_similarity(head, invert_similarity(to_source)))
    else:
        ref = None
        to_source = fit_similarity(driving, source, STABLE)  # B_t
        displacement = apply_similarity(to_source, driving) - source
        pose_change = invert_similarity(to_source)
    local = source + motion_scale * mask[:, None] * displacement
    if motion == "relative":
        local = uncross_lips(local, source)
    if not with_pose:
        return local, ref
    centre = source[list(STABLE)].mean(axis=0)
    return apply_similarity(scale_similarity(pose_change, motion_scale, centre), local), ref
