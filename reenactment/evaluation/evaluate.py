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
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from stylegan3.images import IMAGE_SUFFIXES, image_size, read_image
from stylegan3.io import atomic_write

from . import metrics as M

MODES = ("inversion", "self", "cross")
TABLE_COLUMNS: dict[str, tuple[str, ...]] = {
    "inversion": ("MSE", "SSIM", "PSNR", "LPIPS", "ID", "FID"),
    "self": ("L1", "SSIM", "PSNR", "LMD", "FID"),
    "cross": ("ID", "ARD", "AUH"),
}
EXTRA_COLUMNS: dict[str, tuple[str, ...]] = {
    "inversion": ("ID_dlib",),
    "self": (),
    "cross": ("ID_dlib", "ARD_yaw", "ARD_pitch", "ARD_roll"),
}
HIGHER_IS_BETTER = {"SSIM", "PSNR"}
LABELS = {"AUH": "AUH (landmark approximation)"}

# The thesis's published rows (its text, full precision). "thesis" is the thesis's own method ("Ours" there).
THESIS_TABLES: dict[str, dict] = {
    "inversion": {
        "title": "GAN inversion (thesis Table 4.1)",
        "data": "thesis: the first 1,000 CelebA-HQ images at 1024x1024",
        "rows": {
            "I2S": (0.0111, 0.6668, 28.7689, 0.2035, 0.1476, 26.5206),
            "pSp": (0.0103, 0.6432, 29.2807, 0.2771, 0.1958, 34.9150),
            "e4e": (0.0137, 0.6256, 29.1159, 0.2997, 0.2673, 37.1348),
            "FSE": (0.0048, 0.6870, 30.5188, 0.1532, 0.0937, 19.9567),
            "thesis": (0.0115, 0.6449, 29.1421, 0.1766, 0.0640, 32.3636),
        },
    },
    "self": {
        "title": "Self-reenactment (thesis Table 4.3)",
        "data": "thesis: MEAD test frames (neutral, frontal), source and driving from the same person",
        "rows": {
            "X2Face": (0.0490, 0.5460, 30.2264, 4.5331, 146.5701),
            "FOMM": (0.0403, 0.7783, 30.8781, 4.5673, 125.4573),
            "MRAA": (0.0382, 0.8024, 30.9817, 3.9182, 111.9126),
            "DaGAN": (0.0425, 0.7775, 30.5575, 4.8296, 120.6387),
            "thesis": (0.0418, 0.8368, 30.0414, 2.8277, 121.2479),
        },
    },
    "cross": {
        "title": "Cross-identity reenactment (thesis Table 4.4)",
        "data": "thesis: MEAD test frames, source and driving from different people",
        "rows": {
            "X2Face": (0.3861, 3.0224, 0.2256),
            "FOMM": (0.1142, 2.7688, 0.1745),
            "MRAA": (0.2093, 2.9065, 0.2091),
            "DaGAN": (0.1077, 2.6530, 0.1541),
            "thesis": (0.0908, 1.4558, 0.1183),
        },
    },
}
THESIS_AUH_NOTE = (
    "The thesis's AUH comes from an action-unit detector (as in HeadGAN/PECHead); ours from landmark geometry "
    "(see reenactment.evaluation.metrics.ACTION_UNITS): compare trends, not values."
)


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


NEEDS = {
    "inversion": {"lpips", "arcface", "inception"},
    "self": {"inception", "landmarks"},
    "cross": {"arcface", "landmarks"},
}
# which network each metric needs (Networks field names)
METRIC_NETWORK = {
    "LPIPS": "lpips",
    "ID": "arcface",
    "FID": "inception",
    "LMD": "landmarks",
    "ARD": "landmarks",
    "ARD_yaw": "landmarks",
    "ARD_pitch": "landmarks",
    "ARD_roll": "landmarks",
    "AUH": "landmarks",
    "ID_dlib": "dlib_embedder",
}


def columns(mode: str, dlib_identity: bool = True) -> tuple[str, ...]:
    """The metrics ``mode`` reports: the thesis's table columns, then the extras."""
    return TABLE_COLUMNS[mode] + tuple(c for c in EXTRA_COLUMNS[mode] if c != "ID_dlib" or dlib_identity)


def _reason(err: Exception) -> str:
    return " ".join(f"{type(err).__name__}: {err}".split())


def load_networks(mode: str, options: EvaluationOptions) -> tuple[Networks, dict[str, str]]:
    """Build the networks ``mode`` needs. Returns them and ``{metric: reason}`` for each that could not be built
    (a missing weights file, a missing package); the weights are resolved as ``stylegan3.fetch_weights`` does."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")
    nets, missing = Networks(), {}
    needs = NEEDS[mode]
    if "lpips" in needs:
        try:
            from inversion.perceptual import LPIPS

            nets.lpips = LPIPS(options.lpips_alexnet, device=options.device)
        except (FileNotFoundError, ImportError, ValueError, OSError, RuntimeError) as err:
            missing["LPIPS"] = _reason(err)
    if "arcface" in needs:
        try:
            from inversion.arcface import IdentityEncoder

            nets.arcface = IdentityEncoder.from_pretrained(options.arcface, device=options.device)
        except (FileNotFoundError, ImportError, ValueError, OSError, RuntimeError) as err:
            missing["ID"] = _reason(err)
    if "inception" in needs:
        try:
            nets.inception = M.load_fid_inception(options.inception, device=options.device)
        except (FileNotFoundError, ImportError, ValueError, OSError, RuntimeError) as err:
            missing["FID"] = _reason(err)
    wants_dlib_id = options.dlib_identity and "ID_dlib" in EXTRA_COLUMNS[mode]
    if "landmarks" in needs or wants_dlib_id:
        try:
            from ..faces.landmarks import LandmarkDetector

            nets.landmarks = LandmarkDetector("dlib")
        except (FileNotFoundError, ImportError, OSError) as err:
            for name in columns(mode, options.dlib_identity):
                if METRIC_NETWORK.get(name) in ("landmarks", "dlib_embedder"):
                    missing[name] = _reason(err)
    if wants_dlib_id and nets.landmarks is not None:
        try:
            nets.dlib_embedder = M.DlibFaceEmbedder()
        except (FileNotFoundError, ImportError, OSError, RuntimeError) as err:
            missing["ID_dlib"] = _reason(err)
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
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")
    if not pairs:
        raise PairingError("no pairs to evaluate")
    options = options or EvaluationOptions()
    nets = networks or Networks()
    missing = dict(missing or {})
    wanted = columns(mode, options.dlib_identity)
    needs_source = mode == "cross"
    if needs_source and any(p.source is None for p in pairs):
        for name in ("ID", "ID_dlib"):
            missing[name] = "cross mode needs source images (--source DIR or FILE, or a 'source' manifest column)"
    for name in wanted:
        net = METRIC_NETWORK.get(name)
        if net is not None and getattr(nets, net) is None and name not in missing:
            missing[name] = "network not available"
    active = {c for c in wanted if c not in missing}
    check_images(pairs, compare_pixels=not options.size and bool(active & {"MSE", "L1", "PSNR", "SSIM"}))
    faces = _Faces(nets)
    device = options.device
    rows: list[dict] = []
    failures: dict[str, list[str]] = {}
    fid_real: list[np.ndarray] = []
    fid_fake: list[np.ndarray] = []

    for start in range(0, len(pairs), options.batch_size):
        chunk = pairs[start : start + options.batch_size]
        reals = [read_image(p.real) for p in chunk]
        fakes = [read_image(p.fake) for p in chunk]
        sources = [read_image(p.source) if p.source is not None else None for p in chunk]
        batch_rows = [{"name": p.name} for p in chunk]
        for row, pair, real, fake in zip(batch_rows, chunk, reals, fakes):
            x, y = _tensor(real, device), _tensor(fake, device)
            if options.size:
                x, y = _resize(x, options.size), _resize(y, options.size)
            elif x.shape != y.shape and active & {"MSE", "L1", "PSNR", "SSIM"}:
                raise ValueError(
                    f"pair {pair.name!r}: {pair.real} is {real.shape[1]}x{real.shape[0]} but {pair.fake} is "
                    f"{fake.shape[1]}x{fake.shape[0]}; set size=N to compare both at NxN"
                )
            for name, fn in (("MSE", M.mse), ("L1", M.l1), ("PSNR", M.psnr), ("SSIM", M.ssim)):
                if name in active:
                    row[name] = float(fn(x, y)[0])
        if "LPIPS" in active:
            xs = torch.cat([_resize(_tensor(r, device), options.lpips_size) for r in reals])
            ys = torch.cat([_resize(_tensor(f, device), options.lpips_size) for f in fakes])
            for row, v in zip(batch_rows, M.lpips_distance(xs, ys, nets.lpips).tolist()):
                row["LPIPS"] = v
        if "ID" in active:
            refs = sources if needs_source else reals
            xs = torch.cat([_resize(_tensor(r, device), 256) for r in refs])
            ys = torch.cat([_resize(_tensor(f, device), 256) for f in fakes])
            for row, v in zip(batch_rows, M.identity_distance(ys, xs, nets.arcface).tolist()):
                row["ID"] = v
        if "FID" in active:
            fid_real.append(M.inception_features(_stack_299(reals, device), nets.inception))
            fid_fake.append(M.inception_features(_stack_299(fakes, device), nets.inception))
        if active & {"LMD", "ARD", "AUH", "ID_dlib"}:
            for row, pair, real, fake, src in zip(batch_rows, chunk, reals, fakes, sources):
                _landmark_metrics(row, pair, real, fake, src, active, faces, options, failures, mode)
        rows.extend(batch_rows)
        if progress is not None:
            progress(len(rows))

    metrics: dict[str, float] = {}
    counts: dict[str, int] = {}
    for name in wanted:
        if name not in active or name == "FID":
            continue
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
    if "FID" in active:
        real_f, fake_f = np.concatenate(fid_real), np.concatenate(fid_fake)
        counts["FID"] = len(real_f)
        if len(real_f) < 2:
            missing["FID"] = "FID needs at least 2 images per set"
        else:
            metrics["FID"] = M.fid_from_features(real_f, fake_f)
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


def _landmark_metrics(
    row: dict,
    pair: Pair,
    real: np.ndarray,
    fake: np.ndarray,
    source: np.ndarray | None,
    active: set[str],
    faces: _Faces,
    options: EvaluationOptions,
    failures: dict[str, list[str]],
    mode: str,
) -> None:
    """LMD / ARD / AUH (real vs fake) and ID_dlib (reference vs fake) for one pair, in place into ``row``."""
    pts_fake = faces.landmarks(pair.fake, fake)
    pts_real = faces.landmarks(pair.real, real) if active & {"LMD", "ARD", "AUH"} else None
    for name in ("LMD", "ARD", "AUH"):
        if name not in active:
            continue
        problem = next((p for p in (pts_real, pts_fake) if isinstance(p, str)), None)
        if problem is not None:
            failures.setdefault(name, []).append(f"{pair.name}: {problem}")
            continue
        if name == "LMD":
            row["LMD"] = M.landmark_distance(pts_real, pts_fake, real.shape[:2], fake.shape[:2], options.lmd_size)
        elif name == "ARD":
            yaw, pitch, roll = M.rotation_distance(pts_real, pts_fake)
            row.update(ARD=float(np.mean([yaw, pitch, roll])), ARD_yaw=yaw, ARD_pitch=pitch, ARD_roll=roll)
        else:
            row["AUH"] = M.action_unit_hamming(pts_real, pts_fake)
    if "ID_dlib" in active:
        ref_path, ref_image = (pair.source, source) if mode == "cross" else (pair.real, real)
        pts_ref = faces.landmarks(ref_path, ref_image)
        problem = next((p for p in (pts_ref, pts_fake) if isinstance(p, str)), None)
        if problem is not None:
            failures.setdefault("ID_dlib", []).append(f"{pair.name}: {problem}")
            return
        row["ID_dlib"] = M.embedding_distance(
            faces.descriptor(ref_path, ref_image, pts_ref), faces.descriptor(pair.fake, fake, pts_fake)
        )


def _cell(value: float | None) -> str:
    return "missing" if value is None else f"{value:.4f}"


def _header(name: str) -> str:
    return f"{LABELS.get(name, name)} {'↑' if name in HIGHER_IS_BETTER else '↓'}"


def markdown_table(result: EvaluationResult, compare_thesis: bool = False, label: str = "this run") -> str:
    """The thesis's table layout for ``result.mode`` (its published rows above ours when ``compare_thesis``),
    then the extra metrics, what is missing and why, and what the inputs were."""
    spec = THESIS_TABLES[result.mode]
    columns = TABLE_COLUMNS[result.mode]
    lines = [f"## {spec['title']}", ""]
    lines.append("| method | " + " | ".join(_header(c) for c in columns) + " |")
    lines.append("|---|" + "---|" * len(columns))
    if compare_thesis:
        for method, values in spec["rows"].items():
            lines.append(f"| {method} (published) | " + " | ".join(f"{v:.4f}" for v in values) + " |")
    lines.append(f"| {label} | " + " | ".join(_cell(result.metrics.get(c)) for c in columns) + " |")
    extras = [c for c in EXTRA_COLUMNS[result.mode] if c in result.metrics or c in result.missing]
    if extras:
        lines += ["", "| extra metric | value |", "|---|---|"]
        lines += [f"| {_header(c)} | {_cell(result.metrics.get(c))} |" for c in extras]
    lines += ["", f"Pairs: {result.info.get('pairs', len(result.per_pair))}."]
    if compare_thesis:
        lines.append(f"Published rows: {spec['data']}.")
        if result.mode == "cross":
            lines.append(THESIS_AUH_NOTE)
    if result.missing:
        lines += ["", "Missing:"]
        lines += [f"- {name}: {reason}" for name, reason in result.missing.items()]
    failures = result.info.get("failures") or {}
    if failures:
        lines += ["", "Pairs left out (no face found): " + ", ".join(f"{k} {len(v)}" for k, v in failures.items())]
    lines += ["", _NOTES[result.mode], ""]
    return "\n".join(lines)


_NOTES = {
    "inversion": (
        "MSE, PSNR (dB), SSIM on [0, 1] RGB at native resolution, per image, averaged; LPIPS (AlexNet) at 256x256; "
        "ID = 1 - ArcFace (IR-SE50) cosine; FID with pytorch-fid's Inception (pool3, 2048-d); ID_dlib = Euclidean "
        "distance of dlib's 128-d face descriptors (same person below about 0.6)."
    ),
    "self": (
        "L1, PSNR (dB), SSIM on [0, 1] RGB at native resolution, per image, averaged; LMD = mean distance of dlib's "
        "68 landmarks in pixels at 256x256; FID with pytorch-fid's Inception (pool3, 2048-d)."
    ),
    "cross": (
        "ID = 1 - ArcFace (IR-SE50) cosine between source and output; ARD = mean absolute yaw/pitch/roll "
        "difference in degrees between driving frame and output (pose fitted to dlib's 68 landmarks, "
        "reenactment.faces.head_pose); AUH (landmark approximation) = fraction of 8 action units (AU1, AU2, AU4, AU12, "
        "AU15, AU25, AU26, AU45, from landmark geometry) whose presence differs; ID_dlib = Euclidean distance of "
        "dlib's 128-d face descriptors, source vs output."
    ),
}


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
