"""Face detection and the 70-point landmark layout (68 iBUG points + 2 pupils), behind one interface.

Layout (METHOD.md, OpenPose's face model): jaw 0-16, brows 17-21 and 22-26, nose bridge 27-30, nostrils 31-35,
eyes 36-41 (subject's right eye, image left) and 42-47, outer lip 48-59, inner lip 60-67, pupils 68 (right eye)
and 69 (left eye). Coordinates are (x, y) in pixels of the input image, pixel-centre convention (the centre of
the top-left pixel is (0, 0)).

Backends:
- ``dlib`` (default): HOG face detector + the 68-point shape predictor shipped in ``face-recognition-models``.
  dlib has no pupil model: each pupil is the centroid of its six eye-contour points. Gaze is therefore NOT
  tracked with this backend: the "pupil" follows the eyelids, and a look to the side does not move it.
- ``mediapipe`` (optional, ``mediapipe==0.10.21``): the 478-point face mesh with iris refinement. The 68 iBUG
  points are mesh vertices chosen to match dlib's layout (``MEDIAPIPE_TO_IBUG``); the pupils are the real iris
  centres (mesh vertices 468 and 473), so gaze is tracked.

The 68-point iBUG annotations (300-W) that both the dlib model and this layout come from are licensed for
non-commercial research only.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np

NUM_POINTS = 70
BACKENDS = ("dlib", "mediapipe")

RIGHT_EYE = slice(36, 42)  # subject's right eye: the one on the image's left
LEFT_EYE = slice(42, 48)
RIGHT_PUPIL, LEFT_PUPIL = 68, 69


class NoFaceError(ValueError):
    """No face was found in an image; the message names the input."""


class MultipleFacesError(ValueError):
    """Several faces were found and the caller asked for exactly one."""


@dataclass(frozen=True)
class Face:
    """One detected face: ``box`` (x0, y0, x1, y1) pixels, ``points`` [70, 2] float32 (x, y) pixels."""

    box: tuple[float, float, float, float]
    points: np.ndarray

    @property
    def area(self) -> float:
        x0, y0, x1, y1 = self.box
        return max(0.0, x1 - x0) * max(0.0, y1 - y0)


def eye_centres(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centres of the subject's right and left eye contours, from [..., >=48, 2] points."""
    return points[..., RIGHT_EYE, :].mean(axis=-2), points[..., LEFT_EYE, :].mean(axis=-2)


def inter_ocular_distance(points: np.ndarray) -> np.ndarray | float:
    """Distance between the two eye-contour centres, [..., >=48, 2] -> [...] (NaN where a point is missing)."""
    points = np.asarray(points, dtype=np.float64)
    if points.ndim < 2 or points.shape[-2] < 48 or points.shape[-1] != 2:
        raise ValueError(f"need [..., K >= 48, 2] iBUG points, got shape {points.shape}")
    right, left = eye_centres(points)
    return np.linalg.norm(left - right, axis=-1)


def _check_image(image: np.ndarray) -> np.ndarray:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        desc = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
        raise ValueError(f"expected an HxWx3 uint8 RGB image, got {desc}")
    return np.ascontiguousarray(image)


def face_recognition_models_dir() -> Path:
    """Folder of the dlib model files shipped by ``face-recognition-models`` (found by path: the package's
    own ``__init__`` imports ``pkg_resources``, which recent setuptools no longer provide)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            "the dlib landmark backend needs the 'face-recognition-models' package: pip install face-recognition-models"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "models"


class _DlibBackend:
    """dlib HOG detector + 68-point shape predictor; pupils = eye-contour centroids."""

    def __init__(self, max_detect_side: int = 800, upsample_retry: bool = True) -> None:
        try:
            import dlib
        except ImportError as exc:
            raise ImportError("the dlib landmark backend needs 'dlib-bin' (or 'dlib'): pip install dlib-bin") from exc
        model = face_recognition_models_dir() / "shape_predictor_68_face_landmarks.dat"
        if not model.is_file():
            raise FileNotFoundError(f"dlib shape predictor not found at {model}; reinstall face-recognition-models")
        self._dlib = dlib
        self._detector = dlib.get_frontal_face_detector()
        self._predictor = dlib.shape_predictor(str(model))
        self.max_detect_side = max_detect_side
        self.upsample_retry = upsample_retry

    def _boxes(self, image: np.ndarray) -> list[tuple[float, float, float, float]]:
        # HOG detection cost grows with pixels: detect on a copy no larger than max_detect_side, then scale back.
        h, w = image.shape[:2]
        scale = min(1.0, self.max_detect_side / max(h, w))
        small = image if scale == 1.0 else _resize(image, scale)
        rects = self._detector(small, 0)
        if len(rects) == 0 and self.upsample_retry:
            rects = self._detector(small, 1)  # small faces: one pyramid level up
        return [(r.left() / scale, r.top() / scale, (r.right() + 1) / scale, (r.bottom() + 1) / scale) for r in rects]

    def shape(self, image: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
        """68 + 2 points inside a known face box (x0, y0, x1, y1)."""
        x0, y0, x1, y1 = (int(round(v)) for v in box)
        shape = self._predictor(image, self._dlib.rectangle(x0, y0, x1 - 1, y1 - 1))
        pts = np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float32)
        right, left = eye_centres(pts)
        return np.concatenate([pts, right[None], left[None]]).astype(np.float32)

    def detect(self, image: np.ndarray) -> list[Face]:
        return [Face(box, self.shape(image, box)) for box in self._boxes(image)]


def _resize(image: np.ndarray, scale: float) -> np.ndarray:
    from PIL import Image

    h, w = image.shape[:2]
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0))


# Each iBUG point is the midpoint of two mesh vertices (often the same vertex twice), chosen to match dlib's
# points on the sample photos by scripts/fit_mediapipe_mapping.py. Pupils: iris centres 468 (subject's right), 473.
MEDIAPIPE_TO_IBUG: tuple[tuple[int, int], ...] = (
    # jaw 0-16
    (127, 127),
    (234, 234),
    (147, 177),
    (215, 215),
    (138, 172),
    (136, 136),
    (149, 149),
    (148, 148),
    (152, 152),
    (400, 400),
    (378, 378),
    (365, 365),
    (367, 397),
    (435, 435),
    (323, 323),
    (454, 454),
    (356, 356),
    # brows 17-26
    (70, 156),
    (63, 63),
    (105, 105),
    (66, 66),
    (55, 107),
    (285, 336),
    (296, 296),
    (334, 334),
    (293, 293),
    (300, 383),
    # nose 27-35
    (168, 168),
    (6, 197),
    (5, 195),
    (4, 4),
    (60, 235),
    (20, 97),
    (2, 2),
    (250, 328),
    (305, 460),
    # eyes 36-47
    (7, 130),
    (159, 161),
    (158, 158),
    (112, 173),
    (153, 153),
    (144, 144),
    (256, 414),
    (385, 385),
    (386, 387),
    (255, 466),
    (373, 373),
    (380, 380),
    # lips 48-67
    (61, 61),
    (39, 74),
    (37, 37),
    (0, 11),
    (267, 267),
    (269, 304),
    (287, 308),
    (321, 405),
    (314, 314),
    (17, 17),
    (84, 84),
    (91, 181),
    (146, 191),
    (82, 82),
    (13, 13),
    (312, 312),
    (292, 325),
    (317, 317),
    (14, 14),
    (87, 87),
)
MEDIAPIPE_PUPILS = (468, 473)
_MESH_A = [a for a, _ in MEDIAPIPE_TO_IBUG]
_MESH_B = [b for _, b in MEDIAPIPE_TO_IBUG]


class _MediapipeBackend:
    """MediaPipe face mesh (478 points with irises), reduced to the 70-point layout."""

    def __init__(self, max_faces: int = 4, min_confidence: float = 0.5) -> None:
        try:
            from mediapipe.python.solutions import face_mesh
        except ImportError as exc:
            raise ImportError(
                "the mediapipe landmark backend is an optional extra: pip install mediapipe==0.10.21"
            ) from exc
        self._mesh = face_mesh.FaceMesh(
            static_image_mode=True,
            max_num_faces=max_faces,
            refine_landmarks=True,
            min_detection_confidence=min_confidence,
        )

    def mesh(self, image: np.ndarray) -> list[np.ndarray]:
        """All faces' 478 mesh vertices as [478, 2] float32 (x, y) pixels."""
        h, w = image.shape[:2]
        result = self._mesh.process(image)
        faces = []
        for lms in result.multi_face_landmarks or []:
            xy = np.array([(p.x, p.y) for p in lms.landmark], dtype=np.float64)
            # MediaPipe normalises by width/height with the pixel-edge convention; convert to pixel centres.
            faces.append((xy * (w, h) - 0.5).astype(np.float32))
        return faces

    def detect(self, image: np.ndarray) -> list[Face]:
        faces = []
        for mesh in self.mesh(image):
            ibug = (mesh[_MESH_A] + mesh[_MESH_B]) / 2
            pts = np.concatenate([ibug, mesh[list(MEDIAPIPE_PUPILS)]]).astype(np.float32)
            x0, y0 = mesh.min(axis=0)
            x1, y1 = mesh.max(axis=0)
            faces.append(Face((float(x0), float(y0), float(x1), float(y1)), pts))
        return faces

    def close(self) -> None:
        self._mesh.close()


def parse_face(face: str | int) -> int:
    """The ``face`` option: "largest" (0) or a face index, faces ordered by box area, largest first."""
    text = str(face).strip().lower()
    if text == "largest":
        return 0
    if not text.isdigit():
        raise ValueError(f"face must be 'largest' or a face index (0 = the largest), got {face!r}")
    return int(text)


class LandmarkDetector:
    """Detect faces and return the 70-point layout of the chosen one.

    ``det(image)`` takes an HxWx3 uint8 RGB array and returns [70, 2] float32 (x, y) pixels of the largest face
    (``face=0``; faces are ordered by box area, largest first; pass ``face=k`` for another one, or
    ``on_multiple="error"`` to refuse images with several faces). No face raises ``NoFaceError`` naming ``name``.
    """

    def __init__(self, backend: str = "dlib", on_multiple: str = "largest", **backend_kwargs) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"unknown landmark backend {backend!r}; choose one of {', '.join(BACKENDS)}")
        if on_multiple not in ("largest", "error"):
            raise ValueError(f"on_multiple must be 'largest' or 'error', got {on_multiple!r}")
        self.backend = backend
        self.on_multiple = on_multiple
        self._impl = _DlibBackend(**backend_kwargs) if backend == "dlib" else _MediapipeBackend(**backend_kwargs)

    def detect_all(self, image: np.ndarray) -> list[Face]:
        """Every face found, largest box first."""
        faces = self._impl.detect(_check_image(image))
        return sorted(faces, key=lambda f: -f.area)

    def __call__(self, image: np.ndarray, face: int = 0, name: str = "image") -> np.ndarray:
        faces = self.detect_all(image)
        if not faces:
            raise NoFaceError(f"no face found in {name}")
        if len(faces) > 1 and self.on_multiple == "error":
            raise MultipleFacesError(f"{len(faces)} faces found in {name}; pass face=k to choose one")
        if face >= len(faces):
            raise NoFaceError(f"face {face} requested but only {len(faces)} found in {name}")
        return faces[face].points

    def pick(
        self, image: np.ndarray, face: str | int = "largest", name: str = "image"
    ) -> tuple[np.ndarray, str | None]:
        """[70, 2] points of the chosen face, and a one-line note when there are several: how many, which one was
        taken (its box) and how to choose another. ``face``: "largest" or an index, 0 = largest (box area)."""
        index = parse_face(face)
        faces = self.detect_all(image)
        if not faces:
            raise NoFaceError(f"no face found in {name}")
        if index >= len(faces):
            raise NoFaceError(f"face={index} requested but only {len(faces)} found in {name} (0 = the largest)")
        if len(faces) == 1:
            return faces[0].points, None
        x0, y0, x1, y1 = faces[index].box
        which = "the largest" if index == 0 else f"number {index} by size, 0 = the largest"
        note = (
            f"{name}: {len(faces)} faces found; using face={index} ({which}), {x1 - x0:.0f}x{y1 - y0:.0f} px at "
            f"x={(x0 + x1) / 2:.0f}, y={(y0 + y1) / 2:.0f}; face=0..{len(faces) - 1} picks another"
        )
        return faces[index].points, note

    def read_face(self, path: str | Path, face: str | int = "largest") -> tuple[np.ndarray, np.ndarray, str | None]:
        """``read`` with ``pick``: (HxWx3 uint8 RGB, [70, 2] float32, the note about several faces or None)."""
        from stylegan3.images import read_image

        image = read_image(path)
        return (image, *self.pick(image, face, name=str(path)))

    def read(self, path: str | Path, face: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Read a photo (``stylegan3.images.read_image``) and detect: (HxWx3 uint8 RGB, [70, 2] float32)."""
        from stylegan3.images import read_image

        image = read_image(path)
        return image, self(image, face=face, name=str(path))

    def __repr__(self) -> str:
        return f"LandmarkDetector(backend={self.backend!r}, on_multiple={self.on_multiple!r})"
