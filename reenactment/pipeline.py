"""The reenactment pipeline (thesis section 3.3 + what a user needs around it).

Source: detect, FFHQ-align, invert once into W+ (cached on disk, keyed by the image bytes, the generator's
weights, the inversion settings and, with ``init=encoder:DIR``, the encoder's weights), render its landmark image
L_s. With ``tune=pti`` a copy of the generator is then tuned once on the source (``inversion.tuning``), cached
beside the latent (keyed by the source, the generator, the latent and the tuning settings), and renders every
frame. Driving video, streamed twice: first the landmarks of every frame (frames without a face reuse the last good
landmarks), smoothed over time and carried into a steady aligned crop; then, in batches, landmark image L_d ->
mapper -> ``w_s + f(L_d - L_s)`` -> generator -> H.264 at the driving fps with the driving audio. Only landmark
coordinates are kept for the whole clip (70 x 2 floats per frame); frames and images live one batch at a time.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

import stylegan3
from inversion.encoder import InitOptions, start_latents
from inversion.inverter import InverterOptions, invert
from inversion.losses import LossOptions
from inversion.precision import autocast, check_precision
from inversion.targets import to_tensor
from inversion.tuning import TuningOptions, tune_generator
from stylegan3.config import inline, to_dict
from stylegan3.framing import FFHQ, Framing
from stylegan3.images import IMAGE_SUFFIXES, WRITE_SUFFIXES, read_image, write_image
from stylegan3.io import atomic_folder, atomic_write, cache_dir, network_fingerprint
from stylegan3.sampling import synthesize, to_uint8

from .faces.align import Crop, crop_transform, face_crop, stabilize_crops, transform_points, warp_crop
from .faces.landmark_image import render_landmark_image, render_landmark_images
from .faces.landmarks import LandmarkDetector, NoFaceError, parse_face
from .faces.motion import check_motion_options, transfer_motion
from .faces.tracking import TrackingOptions
from .media.video import OUTPUT_SUFFIXES, VideoReader, VideoWriter
from .prefetch import driving_batches, prefetched


@dataclass
class SourceInversion:
    """How the source is inverted (the thesis's settings by default); part of the latent cache key.
    ``start``: where it starts, e.g. ``SourceInversion(start=InitOptions("encoder:out/encoder"))``."""

    options: InverterOptions = field(default_factory=InverterOptions)
    losses: LossOptions = inline(LossOptions)  # loss, loss_resolution, arcface, alexnet
    start: InitOptions = inline(InitOptions)  # init: mean (the thesis) or encoder:DIR
    tuning: TuningOptions = inline(TuningOptions)  # tune=none|pti, tune_steps, tune_lr, tune_locality, tune_alpha


@dataclass
class DrivingOptions:
    """How driving landmarks are tracked (the same smoothing and crop as ``prepare_dataset.py`` by default) and
    how their motion is put on the source's face (``reenactment.faces.motion``)."""

    tracking: TrackingOptions = inline(TrackingOptions)  # smooth*, tilt, crop, crop_sigma_s (as prepare_dataset.py)
    motion: str = "relative"  # relative (the driving's motion on the source's face) or absolute (its landmarks)
    pose: str = "driving"  # driving (head pose changes transferred) or source (the source's head pose kept)
    reference: str = "best"  # relative mode's reference frame: best (mouth and eyes opened like the source's), first, N
    motion_scale: float = 1.0  # 0: the source unchanged, 1: as driven, > 1: exaggerated
    regions: str = "all"  # comma list of all, expression, lips, eyes, brows, pose: the rest keeps the source's

    def check(self) -> None:
        """ValueError naming the first motion option that is not valid (before any work)."""
        check_motion_options(self.motion, self.pose, self.reference, self.motion_scale, self.regions)


@dataclass
class Source:
    """The inverted source: ``w_s`` [num_ws, w_dim], its aligned image and landmarks (aligned frame pixels);
    for paste-back, the original photo and the 3x3 photo -> aligned transform. With ``tune=pti``:
    ``tuned_generator``, the generator tuned on this source (what renders its frames), and whether it came from
    the cache (``tuned_cached``)."""

    w_s: torch.Tensor
    aligned: np.ndarray
    points: np.ndarray
    cached: bool
    photo: np.ndarray | None = None
    transform: np.ndarray | None = None
    tuned_generator: nn.Module | None = None
    tuned_cached: bool = False

    def renderer(self, G: nn.Module) -> nn.Module:
        """The generator that renders this source's frames: the tuned one (``tune=pti``), else ``G``."""
        return G if self.tuned_generator is None else self.tuned_generator


def check_networks(G: nn.Module, mapper: nn.Module) -> None:
    """Raise ``ValueError`` unless the mapper predicts the latents the generator takes ([num_ws, w_dim]) and, when
    the mapper names the generator it was trained for (``made_for``: the shipped mappers do), it is this one."""
    if (mapper.num_ws, mapper.w_dim) != (G.num_ws, G.w_dim):
        raise ValueError(
            f"the mapper predicts [{mapper.num_ws}, {mapper.w_dim}] latents but the generator takes "
            f"[{G.num_ws}, {G.w_dim}]: they were not trained together"
        )
    made_for = mapper.made_for or {}
    if made_for.get("fingerprint") and made_for["fingerprint"] != network_fingerprint(G):
        raise ValueError(
            f"the mapper was trained for {made_for.get('name', 'another generator')} (fingerprint "
            f"{made_for['fingerprint'][:12]}), not for this generator (fingerprint {network_fingerprint(G)[:12]})"
        )


def source_cache_key(
    image_bytes: bytes, G: nn.Module, settings: SourceInversion, align: dict, encoder: nn.Module | None = None
) -> str:
    """The cache key of a source latent: the image bytes, the generator's weights, the inversion settings and
    alignment, and the start (the encoder's weights, not its folder; the mean-w start keeps the keys it had
    before ``init`` existed)."""
    digest = hashlib.sha256(image_bytes)
    digest.update(network_fingerprint(G).encode())
    inversion = to_dict(settings)
    inversion.pop("init")
    for key in to_dict(settings.tuning):  # tuning comes after the latent: the latent's key stays what it was
        inversion.pop(key)
    if encoder is not None:
        inversion["encoder"] = network_fingerprint(encoder)
    digest.update(json.dumps({"inversion": inversion, "align": align}, sort_keys=True).encode())
    return digest.hexdigest()[:32]


def tuned_cache_key(image_bytes: bytes, G: nn.Module, w_s: torch.Tensor, settings: SourceInversion, align: dict) -> str:
    """The cache key of a source's tuned generator: the image bytes, the original generator's weights, the pivot
    latent (whatever gave it: the inversion or ``latent=``), the tuning and loss settings and the alignment."""
    digest = hashlib.sha256(image_bytes)
    digest.update(network_fingerprint(G).encode())
    digest.update(w_s.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    tuning = {"tuning": to_dict(settings.tuning), "losses": to_dict(settings.losses), "align": align,
              "precision": settings.options.precision}  # fmt: skip
    digest.update(json.dumps(tuning, sort_keys=True).encode())
    return digest.hexdigest()[:32]


def prepare_source(
    G: nn.Module,
    path: str | Path,
    detector: LandmarkDetector,
    settings: SourceInversion,
    device: torch.device,
    tilt: str = "eyes",
    use_cache: bool = True,
    progress: Callable[[int, dict[str, torch.Tensor]], None] | None = None,
    latent: np.ndarray | None = None,
    face: str | int = "largest",
    report: Callable[[str], None] | None = None,
    tune_progress: Callable[[int, dict[str, torch.Tensor]], None] | None = None,
) -> Source:
    """Detect, align and invert the source photo (or load its latent from the cache, or take ``latent``,
    [num_ws, w_dim], as given). ``face``/``report``: which face of several, and where the note about it goes
    (see ``LandmarkDetector.pick``). With ``settings.tuning.tune == "pti"`` also tune a copy of ``G`` on the
    source (``tune_progress`` after each step), or load it from the cache: ``Source.tuned_generator``."""
    settings.tuning.check()
    image, points, note = detector.read_face(path, face)
    if note and report:
        report(note)
    crop = face_crop(points, tilt, G.framing)
    aligned, transform = warp_crop(image, crop, size=G.img_resolution)
    points_aligned = transform_points(transform, points.astype(np.float64))
    align = {"backend": detector.backend, "tilt": tilt}
    if parse_face(face):  # another face than the largest: another latent (the largest keeps the old keys)
        align["face"] = parse_face(face)
    image_bytes = Path(path).read_bytes()
    target = to_tensor(aligned).to(device)
    loss_fn = None
    if latent is not None:
        w_s = torch.as_tensor(np.asarray(latent, np.float32))
        if tuple(w_s.shape) != (G.num_ws, G.w_dim):
            raise ValueError(f"latent has shape {tuple(w_s.shape)}, the generator takes [{G.num_ws}, {G.w_dim}]")
        cached = False
    else:
        encoder = settings.start.load(G)
        key = source_cache_key(image_bytes, G, settings, align, encoder)
        cache_file = cache_dir() / "latents" / f"{key}.npy"
        cached = use_cache and cache_file.is_file()
        if cached:
            w_s = torch.from_numpy(np.load(cache_file))
        else:
            loss_fn = settings.losses.build(device)
            w_init = start_latents(encoder, target)
            result = invert(G, target, loss_fn, settings.options, w_init=w_init, callback=progress)
            w_s = result.w_plus[0].cpu()
            if use_cache:
                buffer = io.BytesIO()
                np.save(buffer, w_s.numpy())
                atomic_write(cache_file, buffer.getvalue())
    source = Source(w_s, aligned, points_aligned, cached, image, transform)
    if not settings.tuning.enabled:
        return source
    folder = cache_dir() / "latents" / f"{tuned_cache_key(image_bytes, G, w_s, settings, align)}.generator"
    if use_cache and (folder / stylegan3.io.CONFIG_FILE).is_file():
        source.tuned_generator, source.tuned_cached = stylegan3.load(folder, device=device), True
        return source
    loss_fn = loss_fn or settings.losses.build(device)
    tuned = tune_generator(G, target, w_s.to(device), loss_fn, settings.tuning, settings.options.precision,
                           callback=tune_progress)  # fmt: skip
    source.tuned_generator = tuned.generator
    if use_cache:
        atomic_folder(folder, lambda tmp: stylegan3.save(tuned.generator, tmp))
    return source


def is_image(path: str | Path) -> bool:
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def output_path(driving: str | Path, output: str | Path) -> Path:
    """The file ``reenact`` writes: ``output`` itself, or for a driving image ``output`` with ``.png`` when its
    suffix is not an image's. A suffix the writer cannot produce is a ValueError naming the file."""
    output = Path(output)
    if is_image(driving):
        if not is_image(output):
            return output.with_suffix(".png")
        if output.suffix.lower() not in WRITE_SUFFIXES:
            raise ValueError(f"output {output}: images are written as {', '.join(WRITE_SUFFIXES)}")
    elif output.suffix.lower() not in OUTPUT_SUFFIXES:
        raise ValueError(f"output {output}: a reenacted video is written as {' or '.join(OUTPUT_SUFFIXES)}")
    return output


def check_driving(driving: str | Path, output: str | Path) -> Path:
    """Fail fast, before any heavy work: the driving clip (or image) must open and yield a first frame, and the
    output suffix must be one the writer produces. Raises ``ImageReadError`` / ``VideoReadError`` / ValueError
    naming the file; returns ``output_path(driving, output)``."""
    target = output_path(driving, output)
    if is_image(driving):
        read_image(driving)
    else:
        with VideoReader(driving) as reader:
            if next(iter(reader), None) is None:
                raise ValueError(f"no frames could be read from {driving}")
    return target


def _driving_frames(path: str | Path) -> Iterator[np.ndarray]:
    if is_image(path):
        yield read_image(path)
        return
    with VideoReader(path) as reader:
        yield from reader


@dataclass
class DrivingTrack:
    """Driving landmarks in the aligned frame, [T, 70, 2] (output pixels), the per-frame crops and bookkeeping."""

    points: np.ndarray
    crops: np.ndarray
    fps: float
    missing: int
    has_audio: bool


def track_driving(
    path: str | Path,
    detector: LandmarkDetector,
    size: int,
    options: DrivingOptions,
    on_frame: Callable[[], None] | None = None,
    framing: str | Framing = FFHQ,
) -> DrivingTrack:
    """First pass over the driving clip: landmarks per frame (no face: the last good ones; before the first face:
    the first good ones), smoothed, a steady crop (the generator's ``framing``), and the landmarks carried into the
    ``size`` aligned frame."""

    def landmarks(frame: np.ndarray) -> np.ndarray:
        if on_frame:
            on_frame()
        try:
            return detector(frame)
        except NoFaceError:
            return np.full((70, 2), np.nan, np.float32)

    video = not is_image(path)
    if video:
        with VideoReader(path) as reader:
            fps, has_audio = reader.fps, reader.has_audio
            raw = [landmarks(frame) for frame in reader]
    else:
        fps, has_audio = 25.0, False
        raw = [landmarks(read_image(path))]
    if not raw:
        raise ValueError(f"no frames could be read from {path}")
    track = np.asarray(raw, np.float64)
    found = np.isfinite(track).all(axis=(1, 2))
    if not found.any():
        raise NoFaceError(f"no face found in any frame of {path}")
    # Missing frames reuse the last good landmarks (the first good ones before any face was seen).
    idx = np.maximum.accumulate(np.where(found, np.arange(len(track)), -1))
    idx[idx < 0] = np.flatnonzero(found)[0]
    track = track[idx]
    tracking = options.tracking
    if video and tracking.smooth and len(track) > 2:
        track = tracking.smoothed(track, fps)
    crops = np.stack([face_crop(p, tracking.tilt, framing).as_array() for p in track])
    if video:
        crops = stabilize_crops(crops, fps, tracking.crop_sigma_s, tracking.crop)
    points = np.stack([transform_points(crop_transform(Crop.from_array(c), size), p) for c, p in zip(crops, track)])
    return DrivingTrack(points.astype(np.float32), crops, fps, int((~found).sum()), has_audio)


class Reenactor:
    """Source latent + mapper + generator: driving landmarks -> reenacted frames, in batches. A source with a
    ``tuned_generator`` (``tune=pti``) is rendered by that generator instead of ``G``."""

    def __init__(
        self, G: nn.Module, mapper: nn.Module, source: Source, device: torch.device, precision: str = "fp32"
    ) -> None:
        """``precision``: fp32 (default), bf16 or fp16: the generator under autocast (about half the memory and
        time per frame on a GPU; the latents and the mapper stay float32)."""
        check_precision(precision)
        self.G = source.renderer(G)  # tune=pti: the tuned generator
        self.mapper, self.source, self.device = mapper.eval(), source, device
        self.precision = precision
        settings = mapper.landmark_settings
        self.image_size, self.frame_size = settings["image_size"], settings["frame_size"]
        self.render_kwargs = {k: settings[k] for k in ("line_width", "dot_diameter", "value") if k in settings}
        self.L_s = self.render(source.points[None])[0]
        self.w_s = source.w_s.to(device)

    def render(self, points: np.ndarray) -> np.ndarray:
        """[N, 70, 2] points in the generator's aligned frame -> [N, S, S, 3] uint8 landmark images, drawn as
        the mapper was trained (landmarks scaled to its training frame size)."""
        scaled = points * (self.frame_size / self.G.img_resolution)
        return render_landmark_images(scaled, size=self.image_size, image_size=self.frame_size, **self.render_kwargs)

    @torch.no_grad()
    def frames(self, points: np.ndarray, landmark_images: np.ndarray | None = None) -> np.ndarray:
        """[N, 70, 2] driving landmarks (aligned frame) -> [N, res, res, 3] uint8 reenacted frames
        (``landmark_images``: ``render(points)`` when already drawn)."""
        images = self.render(points) if landmark_images is None else landmark_images
        w = self.mapper.predict(self.w_s, images, self.L_s)
        with autocast(self.precision, self.device):
            image = synthesize(self.G, w)
        return to_uint8(image.float())


def motion_target(source_points: np.ndarray, track: DrivingTrack, options: DrivingOptions, still: bool = False) -> dict:
    """What the mapper is shown: the driving track's motion put on the source (``reenactment.faces.motion``).

    ``still`` (one driving image): relative motion has no reference frame to measure motion from (the target
    would be the source), so the driving image's landmarks are used as they are (``motion=absolute``).

    Returns ``{"target": [T, 70, 2] float32 (aligned frame pixels), "reference": frame index or None,
    "motion": the mode used}``.
    """
    motion = "absolute" if still else options.motion
    target, ref = transfer_motion(
        source_points,
        track.points,
        motion=motion,
        pose=options.pose,
        reference=options.reference,
        motion_scale=options.motion_scale,
        regions=options.regions,
    )
    return {"target": target.astype(np.float32), "reference": ref, "motion": motion}


def save_track(
    path: str | Path, source_points: np.ndarray, track: DrivingTrack, target: dict, fps: float | None
) -> Path:
    """Write the landmark track as .npz (atomically): ``source`` [70, 2], ``driving`` [T, 70, 2] (after smoothing),
    ``target`` [T, 70, 2] (what is rendered for the mapper), all float32 pixels of the generator's aligned frame;
    ``fps`` (NaN for an image), ``reference`` (the reference frame, -1 in absolute mode) and ``motion``."""
    import io

    buffer = io.BytesIO()
    np.savez(
        buffer,
        source=np.asarray(source_points, np.float32),
        driving=track.points.astype(np.float32),
        target=target["target"],
        fps=np.float64(np.nan if fps is None else fps),
        reference=np.int64(-1 if target["reference"] is None else target["reference"]),
        motion=np.str_(target["motion"]),
    )
    return atomic_write(path, buffer.getvalue())


@dataclass
class ReenactResult:
    """What :func:`reenact` wrote: ``output`` (an mp4, or an image for a driving image), its ``frames`` and ``fps``
    (None for an image), the driving frames without a face (``missing``), the motion mode used and the relative
    mode's reference frame (None in absolute mode)."""

    output: Path
    frames: int
    fps: float | None
    missing: int
    motion: str
    reference: int | None


def reenact(
    reenactor: Reenactor,
    driving: str | Path,
    output: str | Path,
    detector: LandmarkDetector,
    *,
    options: DrivingOptions | None = None,
    batch_size: int = 8,
    concat: bool = False,
    paste_back: bool = False,
    show_landmarks: bool = False,
    track_file: str | Path | None = None,
    on_frames: Callable[[int], None] | None = None,
    on_tracked: Callable[[], None] | None = None,
    prefetch: int = 2,
) -> ReenactResult:
    """Reenact the source with a driving clip (or image) into ``output`` (mp4, or an image for an image).

    The mapper is shown the driving motion put on the source's landmarks as ``options`` say (motion, pose,
    reference, motion_scale, regions: :func:`motion_target`). ``paste_back``: the output is the source photo with
    the reenacted face put back (``--concat`` then shows driving | result side by side at the photo's height);
    otherwise the aligned face at the generator's size. ``track_file``: also write the landmark track there
    (:func:`save_track`), before any frame is rendered. ``show_landmarks``: ``--concat`` gains a last panel, the
    target landmarks drawn as the mapper sees them. ``prefetch``: batches of landmark images (and driving frames)
    prepared ahead in a background thread (``reenactment.prefetch``; 0: in this thread; the frames are the same).

    ``on_tracked()`` is called after each driving frame's landmarks are looked for, ``on_frames(n)`` after each batch
    of ``n`` frames is written.
    """
    options = options or DrivingOptions()
    options.check()
    res = reenactor.G.img_resolution
    paste = PasteBack(reenactor.source, res) if paste_back else None
    output = output_path(driving, output)
    track = track_driving(driving, detector, res, options, on_tracked, reenactor.G.framing)
    target = motion_target(reenactor.source.points, track, options, still=is_image(driving))
    if track_file:
        save_track(track_file, reenactor.source.points, track, target, None if is_image(driving) else track.fps)
    points = target["target"]
    info = {"missing": track.missing, "motion": target["motion"], "reference": target["reference"]}

    def panels(driving_frame: np.ndarray, t: int, result: np.ndarray) -> np.ndarray:
        shown = points[t] if show_landmarks else None
        return _panels(driving_frame, track.crops[t], reenactor.source.aligned, result, paste_back, shown, res)

    if is_image(driving):
        frame = reenactor.frames(points)[0]
        frame = paste(frame) if paste else frame
        if concat:
            frame = panels(next(_driving_frames(driving)), 0, frame)
        write_image(output, frame)
        return ReenactResult(Path(output), 1, None, **info)
    audio = driving if track.has_audio else None
    with VideoWriter(output, track.fps, audio_from=audio) as writer:
        frames = _driving_frames(driving) if concat else None
        with prefetched(driving_batches(points, batch_size, reenactor.render, frames), prefetch) as batches:
            for start, images, decoded in batches:
                batch = reenactor.frames(points[start : start + batch_size], images)
                for i, result in enumerate(batch):
                    result = paste(result) if paste else result
                    if decoded is not None:
                        result = panels(decoded[i], start + i, result)
                    writer.write(result)
                if on_frames:
                    on_frames(len(batch))
    return ReenactResult(Path(output), len(points), track.fps, **info)


def face_mask(points: np.ndarray, size: int, feather: float = 0.04) -> np.ndarray:
    """A soft face mask in the aligned frame, [size, size] float32 in [0, 1]: the ellipse through the jaw and
    brows (grown by 10%, reaching up to the forehead), feathered by ``feather`` x size."""
    from scipy.ndimage import gaussian_filter

    pts = np.asarray(points[:27], np.float64)
    centre = pts.mean(axis=0)
    half_w = (pts[:, 0].max() - pts[:, 0].min()) / 2 * 1.1
    top = pts[17:27, 1].min() - 0.35 * (pts[:, 1].max() - pts[17:27, 1].min())
    half_h = (pts[:, 1].max() - top) / 2 * 1.05
    cy = (pts[:, 1].max() + top) / 2
    yy, xx = np.mgrid[:size, :size].astype(np.float64)
    inside = ((xx - centre[0]) / half_w) ** 2 + ((yy - cy) / half_h) ** 2 <= 1.0
    return np.clip(gaussian_filter(inside.astype(np.float32), feather * size), 0.0, 1.0)


class PasteBack:
    """Puts reenacted aligned faces back into the source photo (feathered face ellipse, the rest of the photo
    unchanged). Output frames are the photo cropped to even width and height (H.264 needs them)."""

    def __init__(self, source: Source, size: int) -> None:
        if source.photo is None or source.transform is None:
            raise ValueError("paste-back needs the source photo and its alignment transform")
        from .faces.align import unalign_image

        self._unalign = unalign_image
        h, w = source.photo.shape[:2]
        self.shape = (h - h % 2, w - w % 2)
        self.photo = source.photo[: self.shape[0], : self.shape[1]].astype(np.float32)
        self.transform = source.transform
        mask = (face_mask(source.points, size) * 255).round().astype(np.uint8)
        warped, cover = unalign_image(np.repeat(mask[..., None], 3, axis=2), self.transform, self.shape)
        self.alpha = (warped[..., :1].astype(np.float32) / 255) * cover[..., None]

    def __call__(self, face: np.ndarray) -> np.ndarray:
        """[size, size, 3] uint8 aligned result -> [H, W, 3] uint8 photo with that face."""
        warped, _ = self._unalign(face, self.transform, self.shape)
        out = self.photo + (warped.astype(np.float32) - self.photo) * self.alpha
        return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _panels(
    driving_frame: np.ndarray,
    crop: np.ndarray,
    source_aligned: np.ndarray,
    result: np.ndarray,
    pasted: bool,
    landmarks: np.ndarray | None = None,
    frame_size: int = 1024,
) -> np.ndarray:
    """driving (aligned with its steady crop) | source | result at the output resolution; for a pasted-back
    result (the source photo's size): driving | result, the driving crop at the result's height (even).
    ``landmarks`` ([70, 2] in the ``frame_size`` aligned frame): a last panel with them drawn."""
    side = result.shape[0]
    driving_aligned, _ = warp_crop(driving_frame, Crop.from_array(crop), size=side)
    panels = [driving_aligned, result] if pasted else [driving_aligned, source_aligned, result]
    if landmarks is not None:
        panels.append(render_landmark_image(landmarks, size=side, image_size=frame_size))
    return np.concatenate(panels, axis=1)
