"""Dataset preparation: videos and photos -> FFHQ-aligned frames + landmarks + a manifest (``manifest.jsonl``).

Each input file is one job. A video is read twice, streaming: first every frame's landmarks (small), which are
smoothed over time and turned into a steady crop, then the frames again to align and store them. A job's records
go to ``parts/<job>.jsonl`` only once the job is complete (written atomically), so a killed run resumes by
redoing just the jobs without a part file. The manifest is rebuilt from all parts, in a fixed order, at the end.

Manifest records (one JSON object per line):
``{"identity", "video", "frame", "time", "image", "landmarks", "is_source"}`` for a stored frame (``image`` is
relative to the output folder; ``landmarks``: 70 [x, y] in the aligned frame), or ``{"identity", "video",
"frame", "skipped": reason}`` for a frame without a face or a file that could not be read (``frame`` null).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from reenactment.faces.align import Crop, crop_transform, face_crop, stabilize_crops, transform_points, warp_crop
from reenactment.faces.landmarks import LandmarkDetector, NoFaceError, inter_ocular_distance
from reenactment.faces.tracking import TrackingOptions
from reenactment.media.video import VIDEO_SUFFIXES, VideoReader, VideoReadError
from stylegan3.config import Bounds, inline
from stylegan3.images import IMAGE_SUFFIXES, ImageReadError, read_image, write_image
from stylegan3.io import atomic_write

# Where the identity of a file comes from: a preset name or a regular expression with a group named "identity",
# matched against the path relative to the input folder (with "/" separators).
IDENTITY_PRESETS = {
    "file": r"^(?:.*/)?(?P<identity>[^/]+?)(?:\.[^./]*)?$",  # one identity per file (its name without suffix)
    "folder": r"^(?P<identity>[^/]+)/",  # the first folder under the input
    "mead": r"^(?P<identity>[^/]+)/video/front/neutral/level_\d+/[^/]+\.mp4$",  # MEAD: neutral, frontal camera
}


@dataclass
class PrepareOptions:
    """What to produce; every field that changes the outputs is checked when a run resumes."""

    fps: float = 25.0  # resample videos to this frame rate
    size: int = 1024  # aligned frame side in pixels
    framing: str = "ffhq"  # the generator's face crop: ffhq (StyleGAN) or digiface (digiface-dcgan-64)
    image_format: str = "png"  # png or jpg
    jpeg_quality: int = 95
    backend: str = "dlib"  # landmark backend: dlib or mediapipe
    tracking: TrackingOptions = inline(TrackingOptions)  # smooth*, tilt, crop, crop_sigma_s
    LIMITS: ClassVar[dict] = {
        "fps": Bounds(0, 1000, above=True),
        "size": Bounds(16, 4096),
        "image_format": ("png", "jpg"),
        "jpeg_quality": Bounds(1, 100),
    }


def identity_regex(pattern: str) -> re.Pattern:
    """The compiled identity pattern of a preset name or a regular expression; ValueError naming a bad one."""
    try:
        regex = re.compile(IDENTITY_PRESETS.get(pattern, pattern))
    except (re.error, RecursionError, OverflowError) as err:
        raise ValueError(f"identity pattern {pattern[:60]!r} is not a regular expression ({err})") from None
    if "identity" not in regex.groupindex:
        raise ValueError(f"identity pattern {pattern!r} has no (?P<identity>...) group and is not a preset")
    return regex


@dataclass(frozen=True)
class Job:
    """One input file: ``rel`` is its path under the input folder, ``identity`` taken from it."""

    path: Path
    rel: str
    identity: str

    @property
    def is_video(self) -> bool:
        return self.path.suffix.lower() in VIDEO_SUFFIXES

    @property
    def key(self) -> str:
        """A file-name-safe unique name for this input."""
        return re.sub(r"[^A-Za-z0-9._-]", "_", self.rel.replace("/", "__"))

    @property
    def video_id(self) -> str:
        return self.rel.rsplit(".", 1)[0] if "." in Path(self.rel).name else self.rel


def find_jobs(input_dir: Path, pattern: str = "file") -> tuple[list[Job], int]:
    """Every image/video under ``input_dir`` whose path matches the identity pattern, sorted by path; also the
    number of media files that did not match (filtered out, e.g. other MEAD emotions)."""
    regex = identity_regex(pattern)
    jobs, unmatched = [], 0
    for path in sorted(p for p in Path(input_dir).rglob("*") if p.is_file()):
        if path.suffix.lower() not in IMAGE_SUFFIXES + VIDEO_SUFFIXES:
            continue
        rel = path.relative_to(input_dir).as_posix()
        match = regex.search(rel)
        if match is None or not match.group("identity"):
            unmatched += 1
            continue
        jobs.append(Job(path, rel, match.group("identity")))
    check_unique(jobs)
    return jobs, unmatched


def check_unique(jobs: Iterable[Job]) -> None:
    """Refuse inputs that would share a video id (``dup.jpg`` and ``dup.png``: one frame folder, one frame id) or
    a part file (names that differ only in characters the part name replaces), naming both files."""
    seen: dict[tuple[str, str], Job] = {}
    for job in jobs:
        for kind, value, what in (
            ("video", job.video_id, f"the video id '{job.video_id}' (its frames and frame ids would collide)"),
            ("key", job.key, f"the part file name '{job.key}.jsonl'"),
        ):
            other = seen.setdefault((kind, value), job)
            if other is not job:
                raise ValueError(f"{other.rel} and {job.rel} would share {what}; rename one of them")


def merged_identities(jobs: Iterable[Job], limit: int = 5) -> list[str]:
    """One line per identity whose files lie in different folders (with ``identity=file``: same-named files of
    perhaps different people, merged into one identity), at most ``limit`` files listed each."""
    folders: dict[str, dict[str, list[str]]] = {}
    for job in jobs:
        folders.setdefault(job.identity, {}).setdefault(str(Path(job.rel).parent), []).append(job.rel)
    lines = []
    for identity, by_folder in folders.items():
        if len(by_folder) > 1:
            files = [rel for rels in by_folder.values() for rel in rels]
            shown = ", ".join(files[:limit]) + (f", ... ({len(files)} files)" if len(files) > limit else "")
            lines.append(f"identity '{identity}' is made of files in {len(by_folder)} folders: {shown}")
    return lines


def _frames(job: Job, fps: float) -> Iterator[np.ndarray]:
    if job.is_video:
        with VideoReader(job.path, fps=fps) as reader:
            yield from reader
    else:
        yield read_image(job.path)


def _detect_track(job: Job, detector: LandmarkDetector, fps: float) -> tuple[np.ndarray, str | None]:
    """Landmarks of every frame, [T, 70, 2] with NaN rows where no face; and the read error that ended the file
    early, if any (frames before it are kept)."""
    points: list[np.ndarray] = []
    error = None
    try:
        for frame in _frames(job, fps):
            try:
                points.append(detector(frame, name=f"{job.rel} frame {len(points)}"))
            except NoFaceError:
                points.append(np.full((70, 2), np.nan, np.float32))
    except (VideoReadError, ImageReadError) as err:
        error = str(err)
    return np.asarray(points, np.float32).reshape(-1, 70, 2), error


def mouth_openness(points: np.ndarray) -> np.ndarray:
    """Mean inner-lip gap (61-67, 62-66, 63-65) over the inter-ocular distance, [..., 70, 2] -> [...]."""
    gap = np.linalg.norm(points[..., [61, 62, 63], :] - points[..., [67, 66, 65], :], axis=-1).mean(-1)
    return gap / inter_ocular_distance(points)


def yaw_asymmetry(points: np.ndarray) -> np.ndarray:
    """How far the nose tip (30) sits from the middle of the jaw ends (0, 16): 0 for a frontal face, ±0.5 at the
    edge, [..., 70, 2] -> [...]."""
    left, right, nose = points[..., 0, 0], points[..., 16, 0], points[..., 30, 0]
    return (nose - left) / np.maximum(right - left, 1e-6) - 0.5


def source_score(points: np.ndarray) -> np.ndarray:
    """Lower is a better source frame: frontal (nose centred between the jaw ends) with the mouth closed."""
    return 2.0 * np.abs(yaw_asymmetry(points)) + mouth_openness(points)


def process_job(job: Job, out_dir: Path, opts: PrepareOptions, detector: LandmarkDetector) -> list[dict]:
    """Detect, smooth, align and store every frame of one input file; returns its manifest records."""
    base = {"identity": job.identity, "video": job.video_id}
    track, error = _detect_track(job, detector, opts.fps)
    if len(track) == 0:
        return [{**base, "frame": None, "skipped": f"unreadable: {error or 'no frames'}"}]
    found = np.isfinite(track).all(axis=(1, 2))
    records: list[dict] = []
    if found.any():
        tracking = opts.tracking
        if job.is_video and tracking.smooth and found.sum() > 2:
            track = tracking.smoothed(track, opts.fps)
        crops = np.full((len(track), 4), np.nan)
        for t in np.flatnonzero(found):
            crops[t] = face_crop(track[t], tracking.tilt, opts.framing).as_array()
        if job.is_video:
            crops = stabilize_crops(crops, opts.fps, tracking.crop_sigma_s, tracking.crop)
        frame_dir = Path("frames") / job.identity / job.video_id
        for t, frame in enumerate(_frames_safe(job, opts.fps, len(track))):
            if not found[t]:
                continue
            crop = Crop.from_array(crops[t])
            aligned, transform = warp_crop(frame, crop, size=opts.size)
            image_rel = frame_dir / f"{t:06d}.{opts.image_format}"
            write_image(out_dir / image_rel, aligned, quality=opts.jpeg_quality)
            pts = transform_points(crop_transform(crop, opts.size), track[t].astype(np.float64))
            records.append(
                {
                    **base,
                    "frame": t,
                    "time": round(t / opts.fps, 6) if job.is_video else 0.0,
                    "image": image_rel.as_posix(),
                    "landmarks": np.round(pts, 2).tolist(),
                    "source_score": round(float(source_score(pts)), 5),
                }
            )
    for t in np.flatnonzero(~found):
        records.append({**base, "frame": int(t), "skipped": "no face"})
    records.sort(key=lambda r: r["frame"])
    if error is not None:
        records.append({**base, "frame": None, "skipped": f"read stopped early after {len(track)} frames: {error}"})
    return records


def _frames_safe(job: Job, fps: float, count: int) -> Iterator[np.ndarray]:
    """The same frames as the landmark pass, stopping quietly where that pass stopped."""
    try:
        for t, frame in enumerate(_frames(job, fps)):
            if t >= count:
                return
            yield frame
    except (VideoReadError, ImageReadError):
        return


def part_path(out_dir: Path, job: Job) -> Path:
    return out_dir / "parts" / f"{job.key}.jsonl"


def write_part(out_dir: Path, job: Job, records: list[dict]) -> None:
    atomic_write(part_path(out_dir, job), "".join(json.dumps(r) + "\n" for r in records))


MAX_LANDMARKS = 1000  # points per frame in a manifest record (70 are written)


def read_part(path: Path) -> list[dict]:
    """The records of a ``manifest.jsonl`` (or of a job's part file), each checked (``check_record``); ValueError
    naming the file and line for anything else."""
    try:
        lines = path.read_bytes().decode("utf-8").splitlines()
    except UnicodeDecodeError as err:
        raise ValueError(f"manifest {path}: not UTF-8 text (byte {err.start})") from None
    records = []
    for line_no, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            check_record(record)
        except RecursionError:
            raise ValueError(f"manifest {path} line {line_no}: nests too deep") from None
        except ValueError as err:  # not JSON, an integer of over 4300 digits, a record missing what is needed
            raise ValueError(f"manifest {path} line {line_no}: {' '.join(str(err).split())[:300]}") from None
        records.append(record)
    return records


def check_record(record: object) -> None:
    """ValueError unless ``record`` is a manifest record as ``prepare_frames`` writes it: ``identity`` and ``video``
    strings, ``frame`` a non-negative integer (or null when ``skipped``), and for a kept frame ``image`` (a
    relative path), ``landmarks`` ([points, 2] finite numbers) and, where given, a finite ``source_score``."""
    if not isinstance(record, dict):
        raise ValueError(f"expected a JSON object, got {type(record).__name__}")
    for key in ("identity", "video"):
        if not isinstance(record.get(key), str) or not record[key]:
            raise ValueError(f"'{key}' must be a non-empty string")
    frame = record.get("frame")
    skipped = "skipped" in record
    if not (frame is None and skipped) and not (
        isinstance(frame, int) and not isinstance(frame, bool) and 0 <= frame < 10**9
    ):
        raise ValueError("'frame' must be an integer from 0 to 10^9")
    if skipped:
        return
    image = record.get("image")
    if not isinstance(image, str) or not image or Path(image).is_absolute() or ".." in Path(image).parts:
        raise ValueError("'image' must be a path inside the dataset folder")
    points = record.get("landmarks")
    if not isinstance(points, list) or not 0 < len(points) <= MAX_LANDMARKS:
        raise ValueError(f"'landmarks' must be a list of 1 to {MAX_LANDMARKS} points")
    for p in points:
        if not (isinstance(p, list) and len(p) == 2 and all(_finite(v) for v in p)):
            raise ValueError("'landmarks' must hold [x, y] pairs of finite numbers")
    if "source_score" in record and not _finite(record["source_score"]):  # optional: latent_clips.py writes none
        raise ValueError("'source_score' must be a finite number")
    if "is_source" in record and not isinstance(record["is_source"], bool):
        raise ValueError("'is_source' must be true or false")


def _finite(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and abs(value) < 1e30


def build_manifest(out_dir: Path, jobs: Iterable[Job]) -> list[dict]:
    """Merge the parts in job order, mark one source frame per identity (lowest ``source_score``), and write
    ``manifest.jsonl`` atomically. Returns the records."""
    records: list[dict] = []
    for job in jobs:
        records.extend(read_part(part_path(out_dir, job)))
    best: dict[str, tuple[float, int]] = {}
    for i, rec in enumerate(records):
        if "skipped" in rec:
            continue
        score = rec["source_score"]
        if rec["identity"] not in best or score < best[rec["identity"]][0]:
            best[rec["identity"]] = (score, i)
    sources = {i for _, i in best.values()}
    for i, rec in enumerate(records):
        if "skipped" not in rec:
            rec["is_source"] = i in sources
    atomic_write(out_dir / "manifest.jsonl", "".join(json.dumps(r) + "\n" for r in records))
    return records


def read_manifest(path: str | Path) -> list[dict]:
    """Records of a ``manifest.jsonl``."""
    return read_part(Path(path))


LOCK_FILE = "prepare.lock"
_HELD_LOCKS: dict[Path, int] = {}  # lock file -> nesting depth, for this process


class OutputInUseError(RuntimeError):
    """Another live run holds the output folder's lock; the message names its pid and the lock file."""


def _try_lock(fd: int) -> bool:
    try:
        import fcntl
    except ImportError:  # Windows
        import msvcrt

        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
            return True
        except OSError:
            return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError:
        return False


@contextlib.contextmanager
def lock_output(out_dir: str | os.PathLike) -> Iterator[Path]:
    """Hold ``out_dir/prepare.lock`` (created) for the duration, with this process's pid written in it.

    The lock is the operating system's (flock), so a killed run never leaves a stale one; a second run on the
    folder while the first is alive raises OutputInUseError naming the first's pid. Re-entrant in one process.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = (out_dir / LOCK_FILE).resolve()
    if _HELD_LOCKS.get(path):
        _HELD_LOCKS[path] += 1
        try:
            yield path
        finally:
            _HELD_LOCKS[path] -= 1
        return
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        if not _try_lock(fd):
            owner = os.read(fd, 200).decode(errors="replace").strip() or "a process"
            os.close(fd)
            raise OutputInUseError(
                f"{out_dir} is being prepared by another live run ({owner}; lock file {path}): "
                "wait for it to finish or stop it, then run again"
            )
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the previous owner removed the file after we opened it: lock the new one
    os.ftruncate(fd, 0)
    os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode())
    _HELD_LOCKS[path] = 1
    try:
        yield path
    finally:
        del _HELD_LOCKS[path]
        path.unlink(missing_ok=True)  # before the unlock, so a waiting run re-opens a fresh file
        os.close(fd)


def remove_leftovers(out_dir: str | os.PathLike) -> int:
    """Delete the temporary files a killed run leaves (``.*.partial`` images, ``.*.tmp`` parts); their count."""
    removed = 0
    for path in Path(out_dir).rglob(".*"):
        if path.is_file() and path.name.endswith((".partial", ".tmp")):
            path.unlink(missing_ok=True)
            removed += 1
    return removed


PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _die_with_parent(parent_pid: int, interval: float = 0.5) -> None:
    """End this worker process as soon as ``parent_pid`` is gone, so a killed run leaves no worker writing on:
    the kernel's parent-death signal on Linux, and everywhere a thread that watches the parent pid."""
    if sys.platform.startswith("linux"):
        import ctypes

        try:
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        except (OSError, AttributeError):
            pass

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(interval)
        os._exit(1)

    if os.getppid() != parent_pid:  # the parent died before the signal was set up
        os._exit(1)
    threading.Thread(target=watch, name="parent-watchdog", daemon=True).start()


_WORKER: dict = {}


def _init_worker(backend: str, parent_pid: int | None = None) -> None:
    if parent_pid is not None:
        _die_with_parent(parent_pid)
    _WORKER["detector"] = LandmarkDetector(backend)


# What a bad input file raises: recorded as "skipped" in its part. Anything else (a bug, a full disk, a killed
# worker) stops the run with its traceback and writes no part, so the next run does the file again.
INPUT_PROBLEMS = (ImageReadError, VideoReadError, NoFaceError)


def _run_job(job: Job, out_dir: Path, opts: PrepareOptions) -> tuple[Job, int]:
    try:
        records = process_job(job, out_dir, opts, _WORKER["detector"])
    except INPUT_PROBLEMS as err:  # one bad file must not stop the run: record it
        records = [{"identity": job.identity, "video": job.video_id, "frame": None, "skipped": f"unreadable: {err}"}]
    write_part(out_dir, job, records)
    return job, len(records)


def prepare_dataset(
    jobs: list[Job],
    out_dir: Path,
    opts: PrepareOptions,
    workers: int = 1,
    progress: Callable[[Job, int], None] | None = None,
) -> list[dict]:
    """Process every job without a part file (in ``workers`` processes, which die with this one), then write the
    manifest. Holds the folder's lock (``lock_output``) throughout and first removes what a killed run left.

    A file that cannot be read or has no face becomes a "skipped" record; any other error in a job stops the run
    (the jobs not started are cancelled) and is raised here, with no part written for that job."""
    out_dir = Path(out_dir)
    check_unique(jobs)
    with lock_output(out_dir):
        remove_leftovers(out_dir)
        todo = [job for job in jobs if not part_path(out_dir, job).is_file()]
        if workers <= 1:
            _init_worker(opts.backend)
            for job in todo:
                done = _run_job(job, out_dir, opts)
                if progress:
                    progress(*done)
        elif todo:
            from concurrent.futures import ProcessPoolExecutor, as_completed
            from multiprocessing import get_context

            with ProcessPoolExecutor(
                workers,
                mp_context=get_context("spawn"),
                initializer=_init_worker,
                initargs=(opts.backend, os.getpid()),
            ) as pool:
                futures = [pool.submit(_run_job, job, out_dir, opts) for job in todo]
                for future in as_completed(futures):
                    try:
                        done = future.result()
                    except BaseException:
                        pool.shutdown(wait=True, cancel_futures=True)  # jobs already running finish their parts
                        raise
                    if progress:
                        progress(*done)
        return build_manifest(out_dir, jobs)
