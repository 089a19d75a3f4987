"""Evaluate results against ground truth the way the thesis's Tables 4.1, 4.3 and 4.4 do.

Modes and their columns (the thesis's names; the metric functions are in ``reenactment.evaluation.metrics``):

- ``inversion`` (Table 4.1): MSE, SSIM, PSNR, LPIPS, ID (real vs inverted), FID; extra ``ID_dlib``.
- ``self`` (Table 4.3): L1, SSIM, PSNR, LMD, FID (driving frame = ground truth vs output).
- ``cross`` (Table 4.4): ID (source vs output), ARD, AUH (driving frame vs output); extras ``ID_dlib`` (source vs
  output) and ``ARD_yaw`` / ``ARD_pitch`` / ``ARD_roll``. AUH is a landmark-geometry approximation of the
  action-unit Hamming distance (no action-unit detector can be installed here) and is labelled so in tables.

Files are paired explicitly (``pair_files``: same relative path without extension; ``read_manifest``: a CSV or
JSON Lines list); unpaired names are an error that lists them. A metric whose network or weights file is
missing is reported in ``missing`` with the reason, and every other metric is still computed.

Each metric is one ``Metric`` record in ``METRICS`` (the network it needs, its direction, label and how it is
computed) and each table one ``Mode`` in ``MODES``, so a new metric is one entry; the thesis's published rows
are data, in ``thesis_tables.yaml``.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import yaml

from stylegan3.images import IMAGE_SUFFIXES, image_size, read_image
from stylegan3.io import atomic_write

from . import metrics as M

# The thesis's published rows, titles and data (its text, full precision); "thesis" is its own method.
_PUBLISHED = yaml.safe_load(resources.files(__package__).joinpath("thesis_tables.yaml").read_text())
THESIS_TABLES: dict[str, dict] = _PUBLISHED["tables"]
THESIS_AUH_NOTE: str = _PUBLISHED["auh_note"]


class PairingError(ValueError):
    """Result and ground-truth files that cannot be paired; the message lists the names."""


@dataclass(frozen=True)
class Pair:
    """One evaluated pair: ``real`` (ground truth / driving frame), ``fake`` (result), ``source`` (cross mode)."""

    name: str
    real: Path
    fake: Path
    source: Path | None = None


def _index(folder: Path) -> dict[str, Path]:
    """Images under ``folder`` (recursively) by relative path without extension."""
    if not folder.is_dir():
        raise PairingError(f"not a folder: {folder}")
    index: dict[str, Path] = {}
    for path in sorted(folder.rglob("*")):
        if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file():
            key = path.relative_to(folder).with_suffix("").as_posix()
            if key in index:
                raise PairingError(f"two images named {key!r} in {folder}: {index[key].name}, {path.name}")
            index[key] = path
    return index


def _listing(names: Sequence[str], limit: int = 10) -> str:
    shown = ", ".join(names[:limit])
    return f"{shown}, ... ({len(names)} in all)" if len(names) > limit else shown


def pair_files(real: str | Path, fake: str | Path, source: str | Path | None = None) -> list[Pair]:
    """Pair ``real/x.*`` with ``fake/x.*`` (relative path without extension, so ``x.jpg`` pairs ``x.png``).

    ``source``: a folder paired by the same names, or one image used for every pair. Raises ``PairingError``
    listing the names without a partner."""
    real_index, fake_index = _index(Path(real)), _index(Path(fake))
    only_real = sorted(set(real_index) - set(fake_index))
    only_fake = sorted(set(fake_index) - set(real_index))
    if only_real or only_fake:
        parts = [f"only in {real}: {_listing(only_real)}" if only_real else "", ""]
        parts[1] = f"only in {fake}: {_listing(only_fake)}" if only_fake else ""
        raise PairingError("unpaired files; " + "; ".join(p for p in parts if p))
    if not real_index:
        raise PairingError(f"no images in {real} and {fake}")
    names = sorted(real_index)
    sources: dict[str, Path | None] = dict.fromkeys(names)
    if source is not None:
        source = Path(source)
        if source.is_file():
            sources = dict.fromkeys(names, source)
        else:
            source_index = _index(source)
            lacking = [n for n in names if n not in source_index]
            if lacking:
                raise PairingError(f"no source image in {source} for: {_listing(lacking)}")
            sources = {n: source_index[n] for n in names}
    return [Pair(n, real_index[n], fake_index[n], sources[n]) for n in names]


def read_manifest(path: str | Path) -> list[Pair]:
    """Pairs from a CSV (header row) or JSON Lines file with fields ``real``, ``fake``, optional ``source`` and
    ``name``; relative paths are relative to the manifest's folder."""
    path = Path(path)
    text = path.read_text()
    if path.suffix.lower() == ".csv":
        records = list(csv.DictReader(text.splitlines()))
    else:
        records = [json.loads(line) for line in text.splitlines() if line.strip()]
    pairs = []
    for i, rec in enumerate(records):
        if not rec.get("real") or not rec.get("fake"):
            raise PairingError(f"{path}: record {i + 1} lacks 'real' or 'fake'")
        src = rec.get("source") or None
        pairs.append(
            Pair(
                str(rec.get("name") or Path(rec["fake"]).with_suffix("").as_posix()),
                path.parent / rec["real"],
                path.parent / rec["fake"],
                path.parent / src if src else None,
            )
        )
    if not pairs:
        raise PairingError(f"{path}: no pairs")
    return pairs


@dataclass
class EvaluationOptions:
    device: str = "cpu"  # where the networks (LPIPS, ArcFace, Inception) run
    batch_size: int = 8  # pairs per step
    size: int | None = None  # MSE/L1/PSNR/SSIM resolution (square); null: native, both images of a pair equal
    lpips_size: int = 256  # LPIPS on images resized to this side (the pSp/e4e evaluation's 256)
    lmd_size: int = 256  # LMD in pixels of this side (landmarks detected at native size, then scaled)
    arcface: str | None = None  # model_ir_se50.pth; null: $REENACT_CACHE/arcface/
    lpips_alexnet: str | None = None  # alexnet-owt-7be5be79.pth; null: torch hub's cache, then $REENACT_CACHE
    inception: str | None = None  # pt_inception-2015-12-05-6726825d.pth; null: $REENACT_CACHE/fid/ (downloaded)
    dlib_identity: bool = True  # also report ID_dlib (dlib's 128-d face descriptor; offline)


@dataclass
class Networks:
    """What a mode needs; None where unavailable (the metric is then reported missing)."""

    lpips: Callable | None = None  # (x, y in [-1, 1]) -> [N]
    arcface: Callable | None = None  # [N, 3, S, S] in [-1, 1] -> [N, D]
    inception: Callable | None = None  # [N, 3, H, W] in [0, 1] -> [[N, 2048, 1, 1]]
    landmarks: Callable | None = None  # HxWx3 uint8 -> [70, 2] (reenactment.faces.landmarks.LandmarkDetector)
    dlib_embedder: Callable | None = None  # (image, points) -> [128]


def _load_lpips(options: EvaluationOptions) -> Callable:
    from inversion.perceptual import LPIPS

    return LPIPS(options.lpips_alexnet, device=options.device)


def _load_arcface(options: EvaluationOptions) -> Callable:
    from inversion.arcface import IdentityEncoder

    return IdentityEncoder.from_pretrained(options.arcface, device=options.device)


def _load_inception(options: EvaluationOptions) -> Callable:
    return M.load_fid_inception(options.inception, device=options.device)


def _load_landmarks(options: EvaluationOptions) -> Callable:
    from ..faces.landmarks import LandmarkDetector

    return LandmarkDetector("dlib")


def _load_dlib_embedder(options: EvaluationOptions) -> Callable:
    return M.DlibFaceEmbedder()


_WEIGHTS_ERRORS = (FileNotFoundError, ImportError, ValueError, OSError, RuntimeError)


@dataclass(frozen=True)
class _Loader:
    build: Callable[[EvaluationOptions], Callable]
    errors: tuple[type[Exception], ...]  # what counts as "unavailable" (a missing file or package), not a bug
    needs: str | None = None  # a network (Networks field) that must load first; its metrics fail with it


# In loading order (the order of the "missing" messages); keys are Networks fields.
_LOADERS: dict[str, _Loader] = {
    "lpips": _Loader(_load_lpips, _WEIGHTS_ERRORS),
    "arcface": _Loader(_load_arcface, _WEIGHTS_ERRORS),
    "inception": _Loader(_load_inception, _WEIGHTS_ERRORS),
    "landmarks": _Loader(_load_landmarks, (FileNotFoundError, ImportError, OSError)),
    "dlib_embedder": _Loader(_load_dlib_embedder, (FileNotFoundError, ImportError, OSError, RuntimeError), "landmarks"),
}


def _reason(err: Exception) -> str:
    return " ".join(f"{type(err).__name__}: {err}".split())


def load_networks(mode: str, options: EvaluationOptions) -> tuple[Networks, dict[str, str]]:
    """Build the networks ``mode``'s metrics need. Returns them and ``{metric: reason}`` for each metric whose
    network could not be built (a missing weights file, a missing package); the weights are resolved as
    ``stylegan3.fetch_weights`` does."""
    wanted = [METRICS[name] for name in columns(mode, options)]
    needed = {m.network for m in wanted}
    needed |= {_LOADERS[n].needs for n in needed if n is not None and _LOADERS[n].needs is not None}
    nets, missing = Networks(), {}
    for net, loader in _LOADERS.items():
        if net not in needed or (loader.needs is not None and getattr(nets, loader.needs) is None):
            continue
        try:
            setattr(nets, net, loader.build(options))
        except loader.errors as err:
            failed = {net} | {n for n, other in _LOADERS.items() if other.needs == net}
            for metric in wanted:
                if metric.network in failed:
                    missing[metric.name] = _reason(err)
    return nets, missing


@dataclass
class EvaluationResult:
    """``metrics``: name -> mean over pairs (numbers only); ``missing``: name -> reason; ``info``: counts,
    failures and settings; ``per_pair``: one dict per pair (``name`` and its values)."""

    mode: str
    metrics: dict[str, float]
    missing: dict[str, str]
    info: dict = field(default_factory=dict)
    per_pair: list[dict] = field(default_factory=list)


def _tensor(image: np.ndarray, device: str) -> torch.Tensor:
    """HxWx3 uint8 -> [1, 3, H, W] float32 in [0, 1]."""
    return torch.from_numpy(np.array(image)).to(device).permute(2, 0, 1)[None].float() / 255.0


def _resize(x: torch.Tensor, size: int, exact_bilinear: bool = False) -> torch.Tensor:
    """[N, 3, H, W] -> [N, 3, size, size]: box average for whole-number shrink factors, else antialiased bilinear
    (``exact_bilinear``: plain bilinear, as pytorch-fid resizes)."""
    h, w = x.shape[-2:]
    if (h, w) == (size, size):
        return x
    if exact_bilinear:
        return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    if h % size == 0 and w % size == 0:
        return F.interpolate(x, size=(size, size), mode="area")
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


class _Faces:
    """Landmarks and dlib descriptors per image file, computed once (a cross-mode source repeats)."""

    def __init__(self, nets: Networks) -> None:
        self.nets = nets
        self.points: dict[Path, np.ndarray | str] = {}
        self.descriptors: dict[Path, np.ndarray] = {}

    def landmarks(self, path: Path, image: np.ndarray) -> np.ndarray | str:
        """[70, 2] points, or the reason there are none."""
        if path not in self.points:
            from ..faces.landmarks import NoFaceError

            try:
                self.points[path] = self.nets.landmarks(image, name=str(path))
            except NoFaceError as err:
                self.points[path] = str(err)
        return self.points[path]

    def descriptor(self, path: Path, image: np.ndarray, points: np.ndarray) -> np.ndarray:
        if path not in self.descriptors:
            self.descriptors[path] = self.nets.dlib_embedder(image, points)
        return self.descriptors[path]


class _NoFace(Exception):
    """A pair that a landmark metric cannot measure; the message says which image and why."""


class _Sample:
    """One pair's images (HxWx3 uint8) and, on demand, what its metrics share (pixels, landmarks)."""

    def __init__(
        self,
        pair: Pair,
        real: np.ndarray,
        fake: np.ndarray,
        source: np.ndarray | None,
        reference: str,  # what identity metrics compare the output with: "real" or "source"
        options: EvaluationOptions,
        faces: _Faces,
    ) -> None:
        self.pair, self.real, self.fake, self.source = pair, real, fake, source
        self.options, self.faces = options, faces
        self.reference_path, self.reference = (pair.source, source) if reference == "source" else (pair.real, real)

    @functools.cached_property
    def pixels(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Real and fake as [1, 3, S, S] in [0, 1], at ``options.size`` (native when unset: both of one size)."""
        pair, real, fake, size = self.pair, self.real, self.fake, self.options.size
        x, y = _tensor(real, self.options.device), _tensor(fake, self.options.device)
        if size:
            return _resize(x, size), _resize(y, size)
        if x.shape != y.shape:
            raise ValueError(
                f"pair {pair.name!r}: {pair.real} is {real.shape[1]}x{real.shape[0]} but {pair.fake} is "
                f"{fake.shape[1]}x{fake.shape[0]}; set size=N to compare both at NxN"
            )
        return x, y

    def points(self, *which: str) -> list[np.ndarray]:
        """[70, 2] landmarks of the named images ("real", "fake", "reference"), in that order; raises ``_NoFace``
        with the first one's reason where an image has no face."""
        paths = {"real": self.pair.real, "fake": self.pair.fake, "reference": self.reference_path}
        images = {"real": self.real, "fake": self.fake, "reference": self.reference}
        found = [self.faces.landmarks(paths[w], images[w]) for w in which]
        problem = next((p for p in found if isinstance(p, str)), None)
        if problem is not None:
            raise _NoFace(problem)
        return found


@dataclass
class _Batch:
    """One step's pairs."""

    samples: list[_Sample]
    nets: Networks
    options: EvaluationOptions

    def stack(self, images: str, size: int) -> torch.Tensor:
        """The batch's ``images`` ("real", "fake", "reference") as [N, 3, size, size] in [0, 1]."""
        device = self.options.device
        return torch.cat([_resize(_tensor(getattr(s, images), device), size) for s in self.samples])


def _pixel_metric(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> Callable[[_Sample], float]:
    return lambda s: float(fn(*s.pixels)[0])


def _lpips(b: _Batch) -> list[float]:
    size = b.options.lpips_size
    return M.lpips_distance(b.stack("real", size), b.stack("fake", size), b.nets.lpips).tolist()


def _identity(b: _Batch) -> list[float]:
    # average-pooled to 256 first; ArcFace's pSp crop then takes 112
    return M.identity_distance(b.stack("fake", 256), b.stack("reference", 256), b.nets.arcface).tolist()


def _inception(b: _Batch) -> tuple[np.ndarray, np.ndarray]:
    real = M.inception_features(_stack_299([s.real for s in b.samples], b.options.device), b.nets.inception)
    fake = M.inception_features(_stack_299([s.fake for s in b.samples], b.options.device), b.nets.inception)
    return real, fake


def _lmd(s: _Sample) -> float:
    real, fake = s.points("real", "fake")
    return M.landmark_distance(real, fake, s.real.shape[:2], s.fake.shape[:2], s.options.lmd_size)


def _ard(s: _Sample) -> dict[str, float]:
    yaw, pitch, roll = M.rotation_distance(*s.points("real", "fake"))
    return {"ARD": float(np.mean([yaw, pitch, roll])), "ARD_yaw": yaw, "ARD_pitch": pitch, "ARD_roll": roll}


def _auh(s: _Sample) -> float:
    return M.action_unit_hamming(*s.points("real", "fake"))


def _dlib_identity(s: _Sample) -> float:
    ref, fake = s.points("reference", "fake")
    faces = s.faces
    return M.embedding_distance(
        faces.descriptor(s.reference_path, s.reference, ref), faces.descriptor(s.pair.fake, s.fake, fake)
    )


_SetFeatures = Callable[[_Batch], tuple[np.ndarray, np.ndarray]]  # (real, fake) features of one batch
_SetDistance = Callable[[np.ndarray, np.ndarray], float]  # all real features, all fake features -> one number


@dataclass(frozen=True)
class Metric:
    """One metric: how it is reported and how it is computed (exactly one of ``per_pair``, ``per_batch``,
    ``over_set``, or ``part_of``). Per-pair values are averaged over the pairs."""

    name: str  # its key in metrics.json and per_pair.csv
    network: str | None = None  # the Networks field it needs (None: pixels or nothing loaded)
    higher_is_better: bool = False
    label: str = ""  # its table header where that differs from the name
    per_pair: Callable[[_Sample], float | dict[str, float]] | None = None  # a dict: also its parts' values
    per_batch: Callable[[_Batch], list[float]] | None = None  # one value per pair of the batch, at once
    over_set: tuple[_SetFeatures, _SetDistance] | None = None  # the whole set: features per batch, then one number
    part_of: str | None = None  # computed by that metric's per_pair (ARD's angles)
    compares_pixels: bool = False  # real and fake pixel by pixel: both of one size (or options.size)
    uses_reference: bool = False  # compares the output with the mode's reference (the source in cross mode)
    option: str | None = None  # an EvaluationOptions flag that turns it off when false

    def __post_init__(self) -> None:
        ways = [self.per_pair, self.per_batch, self.over_set, self.part_of]
        if sum(w is not None for w in ways) != 1:
            raise ValueError(f"metric {self.name}: give exactly one of per_pair, per_batch, over_set, part_of")

    @property
    def header(self) -> str:
        return f"{self.label or self.name} {'↑' if self.higher_is_better else '↓'}"


METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric("MSE", per_pair=_pixel_metric(M.mse), compares_pixels=True),
        Metric("L1", per_pair=_pixel_metric(M.l1), compares_pixels=True),
        Metric("PSNR", higher_is_better=True, per_pair=_pixel_metric(M.psnr), compares_pixels=True),
        Metric("SSIM", higher_is_better=True, per_pair=_pixel_metric(M.ssim), compares_pixels=True),
        Metric("LPIPS", "lpips", per_batch=_lpips),
        Metric("ID", "arcface", per_batch=_identity, uses_reference=True),
        Metric("FID", "inception", over_set=(_inception, M.fid_from_features)),
        Metric("LMD", "landmarks", per_pair=_lmd),
        Metric("ARD", "landmarks", per_pair=_ard),
        Metric("ARD_yaw", "landmarks", part_of="ARD"),
        Metric("ARD_pitch", "landmarks", part_of="ARD"),
        Metric("ARD_roll", "landmarks", part_of="ARD"),
        Metric("AUH", "landmarks", label="AUH (landmark approximation)", per_pair=_auh),
        Metric("ID_dlib", "dlib_embedder", per_pair=_dlib_identity, uses_reference=True, option="dlib_identity"),
    )
}


@dataclass(frozen=True)
class Mode:
    """One of the thesis's tables: its columns (thesis_tables.yaml holds its published rows), our extras, and
    what the identity metrics compare the output with."""

    name: str
    table: tuple[str, ...]  # the thesis's columns, in its order
    extras: tuple[str, ...]  # reported below the table
    reference: str  # "real" (the ground truth) or "source" (cross mode: the source image)
    note: str  # how the numbers are measured, printed under the table


MODES: dict[str, Mode] = {
    m.name: m
    for m in (
        Mode(
            "inversion",
            ("MSE", "SSIM", "PSNR", "LPIPS", "ID", "FID"),
            ("ID_dlib",),
            "real",
            "MSE, PSNR (dB), SSIM on [0, 1] RGB at native resolution, per image, averaged; LPIPS (AlexNet) at "
            "256x256; ID = 1 - ArcFace (IR-SE50) cosine; FID with pytorch-fid's Inception (pool3, 2048-d); ID_dlib = "
            "Euclidean distance of dlib's 128-d face descriptors (same person below about 0.6).",
        ),
        Mode(
            "self",
            ("L1", "SSIM", "PSNR", "LMD", "FID"),
            (),
            "real",
            "L1, PSNR (dB), SSIM on [0, 1] RGB at native resolution, per image, averaged; LMD = mean distance of "
            "dlib's 68 landmarks in pixels at 256x256; FID with pytorch-fid's Inception (pool3, 2048-d).",
        ),
        Mode(
            "cross",
            ("ID", "ARD", "AUH"),
            ("ID_dlib", "ARD_yaw", "ARD_pitch", "ARD_roll"),
            "source",
            "ID = 1 - ArcFace (IR-SE50) cosine between source and output; ARD = mean absolute yaw/pitch/roll "
            "difference in degrees between driving frame and output (pose fitted to dlib's 68 landmarks, "
            "reenactment.faces.head_pose); AUH (landmark approximation) = fraction of 8 action units (AU1, AU2, AU4, "
            "AU12, AU15, AU25, AU26, AU45, from landmark geometry) whose presence differs; ID_dlib = Euclidean "
            "distance of dlib's 128-d face descriptors, source vs output.",
        ),
    )
}


def _mode(mode: str) -> Mode:
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")
    return MODES[mode]


def columns(mode: str, options: EvaluationOptions | None = None) -> tuple[str, ...]:
    """The metrics ``mode`` reports: the thesis's table columns, then the extras that ``options`` turns on."""
    options = options or EvaluationOptions()
    spec = _mode(mode)
    on = [c for c in spec.extras if METRICS[c].option is None or getattr(options, METRICS[c].option)]
    return spec.table + tuple(on)


def evaluate(
    mode: str,
    pairs: Sequence[Pair],
    options: EvaluationOptions | None = None,
    networks: Networks | None = None,
    missing: dict[str, str] | None = None,
    progress: Callable[[int], None] | None = None,
) -> EvaluationResult:
    """Compute ``mode``'s metrics over ``pairs``; ``networks``/``missing`` from ``load_networks`` (or stand-ins).

    Images are read with ``read_image`` (HxWx3 uint8 RGB) and used as [0, 1] floats. Per pair: MSE, L1, PSNR,
    SSIM at ``options.size`` (native by default); LPIPS at ``options.lpips_size``; ID on the images average-
    pooled to 256 (ArcFace's pSp crop then takes 112); LMD, ARD, AUH, ID_dlib from dlib landmarks detected at
    native resolution (a pair without a face in either image is left out of those and listed in
    ``info["failures"]``). FID over the whole sets, each image resized to 299 as pytorch-fid does.
    ``progress(n)`` is called after each batch with the number of pairs done.
    """
    spec = _mode(mode)
    if not pairs:
        raise PairingError("no pairs to evaluate")
    options = options or EvaluationOptions()
    nets = networks or Networks()
    missing = dict(missing or {})
    wanted = columns(mode, options)
    if spec.reference == "source" and any(p.source is None for p in pairs):
        for name in wanted:
            if METRICS[name].uses_reference:
                missing[name] = f"{mode} mode needs source images (--source DIR or FILE, or a 'source' manifest column)"
    for name in wanted:
        net = METRICS[name].network
        if net is not None and getattr(nets, net) is None and name not in missing:
            missing[name] = "network not available"
    active = [METRICS[c] for c in wanted if c not in missing]
    check_images(pairs, compare_pixels=not options.size and any(m.compares_pixels for m in active))
    faces = _Faces(nets)
    rows: list[dict] = []
    failures: dict[str, list[str]] = {}
    features: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {m.name: [] for m in active if m.over_set}

    for start in range(0, len(pairs), options.batch_size):
        chunk = pairs[start : start + options.batch_size]
        samples = [
            _Sample(p, read_image(p.real), read_image(p.fake), read_image(p.source) if p.source is not None else None,
                    spec.reference, options, faces)
            for p in chunk
        ]  # fmt: skip
        batch = _Batch(samples, nets, options)
        batch_rows = [{"name": p.name} for p in chunk]
        for metric in active:
            if metric.per_batch is not None:
                for row, value in zip(batch_rows, metric.per_batch(batch)):
                    row[metric.name] = value
            elif metric.over_set is not None:
                features[metric.name].append(metric.over_set[0](batch))
        for row, sample in zip(batch_rows, samples):
            for metric in active:
                if metric.per_pair is None:
                    continue
                try:
                    value = metric.per_pair(sample)
                except _NoFace as err:
                    failures.setdefault(metric.name, []).append(f"{sample.pair.name}: {err}")
                    continue
                row.update(value if isinstance(value, dict) else {metric.name: value})
        rows.extend(batch_rows)
        if progress is not None:
            progress(len(rows))

    metrics: dict[str, float] = {}
    counts: dict[str, int] = {}
    for metric in active:
        if metric.over_set is not None:
            continue
        name = metric.name
        values = [r[name] for r in rows if name in r]
        counts[name] = len(values)
        if not values:
            missing[name] = f"no pair could be measured ({len(failures.get(name, []))} failures, see info.json)"
            continue
        mean = float(np.mean(values))
        if not math.isfinite(mean):
            missing[name] = f"not finite ({sum(not math.isfinite(v) for v in values)} pairs are identical images)"
            continue
        metrics[name] = mean
    for metric in active:
        if metric.over_set is None:
            continue
        real_f = np.concatenate([r for r, _ in features[metric.name]])
        fake_f = np.concatenate([f for _, f in features[metric.name]])
        counts[metric.name] = len(real_f)
        if len(real_f) < 2:
            missing[metric.name] = f"{metric.name} needs at least 2 images per set"
        else:
            metrics[metric.name] = metric.over_set[1](real_f, fake_f)
    info = {
        "mode": mode,
        "pairs": len(pairs),
        "counts": counts,
        "failures": failures,
        "options": {k: getattr(options, k) for k in EvaluationOptions.__dataclass_fields__},
    }
    ordered_missing = {k: missing[k] for k in wanted if k in missing}
    return EvaluationResult(mode, metrics, ordered_missing, info, rows)


def check_images(pairs: Sequence[Pair], compare_pixels: bool = False) -> None:
    """Before any work: every file of ``pairs`` is a readable image (header only), and with ``compare_pixels``
    each real/fake pair has one size. Raises ImageReadError or ValueError naming the files."""
    sizes: dict[Path, tuple[int, int]] = {}
    for pair in pairs:
        for path in (pair.real, pair.fake, pair.source):
            if path is not None and path not in sizes:
                sizes[path] = image_size(path)
        if compare_pixels and sizes[pair.real] != sizes[pair.fake]:
            (wr, hr), (wf, hf) = sizes[pair.real], sizes[pair.fake]
            raise ValueError(
                f"pair {pair.name!r}: {pair.real} is {wr}x{hr} but {pair.fake} is {wf}x{hf}; "
                "set size=N to compare both at NxN"
            )


def _stack_299(images: list[np.ndarray], device: str) -> torch.Tensor:
    # pytorch-fid's own bilinear resize, done per image so that sizes may differ; its internal one is then a no-op
    return torch.cat([_resize(_tensor(im, device), 299, exact_bilinear=True) for im in images])


def _cell(value: float | None) -> str:
    return "missing" if value is None else f"{value:.4f}"


def markdown_table(result: EvaluationResult, compare_thesis: bool = False, label: str = "this run") -> str:
    """The thesis's table layout for ``result.mode`` (its published rows above ours when ``compare_thesis``),
    then the extra metrics, what is missing and why, and what the inputs were."""
    spec, published = MODES[result.mode], THESIS_TABLES[result.mode]
    lines = [f"## {published['title']}", ""]
    lines.append("| method | " + " | ".join(METRICS[c].header for c in spec.table) + " |")
    lines.append("|---|" + "---|" * len(spec.table))
    if compare_thesis:
        for method, values in published["rows"].items():
            lines.append(f"| {method} (published) | " + " | ".join(f"{v:.4f}" for v in values) + " |")
    lines.append(f"| {label} | " + " | ".join(_cell(result.metrics.get(c)) for c in spec.table) + " |")
    extras = [c for c in spec.extras if c in result.metrics or c in result.missing]
    if extras:
        lines += ["", "| extra metric | value |", "|---|---|"]
        lines += [f"| {METRICS[c].header} | {_cell(result.metrics.get(c))} |" for c in extras]
    lines += ["", f"Pairs: {result.info.get('pairs', len(result.per_pair))}."]
    if compare_thesis:
        lines.append(f"Published rows: {published['data']}.")
        if "AUH" in spec.table:
            lines.append(THESIS_AUH_NOTE)
    if result.missing:
        lines += ["", "Missing:"]
        lines += [f"- {name}: {reason}" for name, reason in result.missing.items()]
    failures = result.info.get("failures") or {}
    if failures:
        lines += ["", "Pairs left out (no face found): " + ", ".join(f"{k} {len(v)}" for k, v in failures.items())]
    lines += ["", spec.note, ""]
    return "\n".join(lines)


def write_results(
    result: EvaluationResult, out: str | Path, compare_thesis: bool = False, config_yaml: str | None = None
) -> dict[str, Path]:
    """Write ``metrics.json`` (metric -> number, plus ``"missing": {metric: reason}``), ``metrics.md``,
    ``info.json`` (counts, failures, options), ``per_pair.csv`` and (given its text) ``config.yaml`` into ``out``.

    Everything is rendered first and then each file renamed into place, so a run that fails before this point
    leaves an earlier run's results and config together and untouched. Returns the paths."""
    out = Path(out)
    names = {"json": "metrics.json", "md": "metrics.md", "info": "info.json", "csv": "per_pair.csv"}
    data = {**result.metrics, "missing": result.missing}
    table = io.StringIO(newline="")
    keys = ["name"] + sorted({k for r in result.per_pair for k in r} - {"name"})
    writer = csv.DictWriter(table, fieldnames=keys)
    writer.writeheader()
    writer.writerows(result.per_pair)
    contents = {
        "json": json.dumps(data, indent=1, allow_nan=False) + "\n",
        "md": markdown_table(result, compare_thesis),
        "info": json.dumps(result.info, indent=1, default=str) + "\n",
        "csv": table.getvalue(),
    }
    if config_yaml is not None:
        names["config"], contents["config"] = "config.yaml", config_yaml
    return {key: atomic_write(out / names[key], contents[key]) for key in names}
