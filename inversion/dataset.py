"""Inverting a whole dataset: work split into shards, shards split over processes, each shard written atomically.

A shard is a fixed list of frames (``shard_size`` consecutive manifest frames, or one whole video with
``warm_start="sequential"``, where frame t of ``batch_size`` videos is inverted together, each from its own previous
latent); shard k belongs to rank ``k % world_size``. Finished shards are files
(``latents/shard_<k>.npz``: ``ids``, ``w`` float32 [n, num_ws, w_dim], ``loss_<term>`` [n], ``steps`` [n], and
``failed_ids`` / ``failed_reasons`` for frames whose image could not be used), so a killed run resumes at the
first unfinished shard with the same results, and any number of processes (``torchrun``) can share the work.
A shard with failed frames counts as done but is retried by the next run (``retry_frames``), and
``run.json`` records the settings and every shard's frames, so a rerun with other settings or another split of
the frames is refused instead of mixing results (``check_run``).
"""

from __future__ import annotations

import dataclasses
import io
import json
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from stylegan3.images import IMAGE_SUFFIXES, ImageReadError, read_image
from stylegan3.io import atomic_write

from .inverter import InversionResult, InverterOptions, invert
from .losses import InversionLoss
from .targets import resize_square, to_tensor

RUN_FILE = "run.json"


@dataclass(frozen=True)
class Frame:
    """One frame to invert: ``id`` (unique, e.g. ``video/000012``), its image path, video and index."""

    id: str
    path: Path
    video: str
    index: int


def frames_from_input(path: str | Path) -> list[Frame]:
    """Frames of a ``manifest.jsonl`` (kept frames only, in manifest order) or of a folder of images (sorted)."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        return [Frame(p.relative_to(path).as_posix(), p, p.relative_to(path).as_posix(), 0) for p in files]
    if not path.is_file():
        raise FileNotFoundError(f"input not found: {path} (give a manifest.jsonl or a folder of images)")
    frames = []
    try:
        lines = path.read_bytes().decode("utf-8").splitlines()
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not UTF-8 text (byte {err.start})") from None
    for line_no, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except RecursionError:
            raise ValueError(f"{path}:{line_no}: nests too deep") from None
        except ValueError as err:  # not JSON, or an integer of over 4300 digits
            raise ValueError(f"{path}:{line_no}: not JSON ({' '.join(str(err).split())[:200]})") from None
        if not isinstance(rec, dict):
            raise ValueError(f"{path}:{line_no}: expected a JSON object, got {type(rec).__name__}")
        if "skipped" in rec or "image" not in rec:
            continue
        video, index, image = rec.get("video"), rec.get("frame"), rec["image"]
        if not isinstance(video, str) or not video or not isinstance(image, str) or not image:
            raise ValueError(f"{path}:{line_no}: 'video' and 'image' must be non-empty strings")
        if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < 10**9:
            raise ValueError(f"{path}:{line_no}: 'frame' must be an integer from 0 to 10^9")
        frames.append(Frame(f"{video}/{index:06d}", path.parent / image, video, index))
    return frames


def make_shards(frames: list[Frame], shard_size: int, by_video: bool) -> list[list[Frame]]:
    """Fixed shards: ``shard_size`` consecutive frames, or (``by_video``) one video each, frames in order."""
    if by_video:
        videos: dict[str, list[Frame]] = {}
        for frame in frames:
            videos.setdefault(frame.video, []).append(frame)
        return [sorted(v, key=lambda f: f.index) for v in videos.values()]
    return [frames[i : i + shard_size] for i in range(0, len(frames), shard_size)]


def shard_path(out: Path, k: int) -> Path:
    return out / "latents" / f"shard_{k:06d}.npz"


def write_shard(
    out: Path,
    k: int,
    ids: list[str],
    w: np.ndarray,
    losses: dict[str, np.ndarray],
    steps: list[int],
    failures: list[tuple[str, str]] = (),
) -> None:
    """Write shard k atomically (its log lines first, then the .npz that marks it finished). A log line is
    ``{"id": frame id, "steps": n, "loss_<term>": value}`` (prefixed: the ID term must not overwrite the frame's
    id). ``failures``:
    (frame id, reason) of the frames that could not be inverted; they are kept in the .npz and retried later."""
    lines = [
        json.dumps({"id": i, "steps": s, **{f"loss_{t}": round(float(v[j]), 6) for t, v in losses.items()}})
        for j, (i, s) in enumerate(zip(ids, steps))
    ]
    atomic_write(out / "logs" / f"shard_{k:06d}.jsonl", "".join(line + "\n" for line in lines).encode())
    buf = io.BytesIO()
    arrays = {f"loss_{t}": v.astype(np.float32) for t, v in losses.items()}
    failed = {
        "failed_ids": np.array([f for f, _ in failures], dtype=np.str_),
        "failed_reasons": np.array([r for _, r in failures], dtype=np.str_),
    }
    np.savez(buf, ids=np.array(ids, dtype=np.str_), w=w.astype(np.float32), steps=np.array(steps), **arrays, **failed)
    atomic_write(shard_path(out, k), buf.getvalue())


def read_shard(out: Path, k: int) -> dict:
    """Shard k as written by ``write_shard``: ``ids``, ``w``, ``losses`` {term: [n]}, ``steps``, ``failures``."""
    with np.load(shard_path(out, k)) as data:
        failed = data["failed_ids"].tolist() if "failed_ids" in data.files else []
        reasons = data["failed_reasons"].tolist() if "failed_reasons" in data.files else []
        return {
            "ids": [str(i) for i in data["ids"]],
            "w": data["w"],
            "losses": {f[5:]: data[f] for f in data.files if f.startswith("loss_")},
            "steps": data["steps"].tolist(),
            "failures": list(zip(failed, reasons)),
        }


def shard_failures(out: Path, k: int) -> list[tuple[str, str]]:
    """(frame id, reason) of the frames shard k could not invert ([] when it has none)."""
    with np.load(shard_path(out, k)) as data:
        if "failed_ids" not in data.files:
            return []
        return list(zip(data["failed_ids"].tolist(), data["failed_reasons"].tolist()))


def retry_frames(shard: list[Frame], failed: set[str], sequential: bool) -> list[Frame]:
    """The frames of a shard to invert again: the failed ones, or (``sequential``: each frame starts from the
    previous one) the whole video."""
    return list(shard) if sequential else [f for f in shard if f.id in failed]


def merge_shard(shard: list[Frame], before: dict, now: dict) -> dict:
    """A retried shard: the earlier run's results with the retried frames' new ones, in the shard's frame order.
    Every frame ``now`` covers (inverted or failed again) replaces its earlier entry."""
    redone = {f for f, _ in now["failures"]} | set(now["ids"])
    rows: dict[str, tuple[dict, int]] = {i: (before, j) for j, i in enumerate(before["ids"]) if i not in redone}
    rows.update({i: (now, j) for j, i in enumerate(now["ids"])})
    ids = [f.id for f in shard if f.id in rows]
    terms = sorted(set(before["losses"]) | set(now["losses"])) if ids else []
    w = [rows[i][0]["w"][rows[i][1]] for i in ids]
    return {
        "ids": ids,
        "w": np.stack(w) if w else now["w"][:0],
        "losses": {t: np.asarray([rows[i][0]["losses"][t][rows[i][1]] for i in ids]) for t in terms},
        "steps": [int(rows[i][0]["steps"][rows[i][1]]) for i in ids],
        "failures": [(f, r) for f, r in before["failures"] if f not in redone] + list(now["failures"]),
    }


def run_record(settings: dict, shards: list[list[Frame]]) -> dict:
    """What ``run.json`` holds: the settings that change the results and each shard's frame ids."""
    return {"settings": settings, "shards": [[f.id for f in shard] for shard in shards]}


def _upgrade_settings(settings: dict) -> dict:
    """Settings of a ``run.json`` from before ``precision`` replaced ``mixed_precision``: ``false`` was float32
    throughout, the arithmetic of ``precision: fp32``, so such a folder resumes; ``true`` (the generator's CUDA
    float16 layers) has no equal now and is left as it is (the run is refused)."""
    if settings.get("mixed_precision") is False and "precision" not in settings:
        return {k: v for k, v in settings.items() if k != "mixed_precision"} | {"precision": "fp32"}
    return settings


def check_run(out: Path, record: dict) -> None:
    """Refuse to resume ``out`` when its ``run.json`` differs from ``record``: a ValueError naming the settings
    that differ, or saying how the frames or their shards differ (a changed manifest, ``shard_size`` or ``limit``).
    Nothing to check when ``out`` has no run yet."""
    path = out / RUN_FILE
    if not path.is_file():
        return
    try:
        before = json.loads(path.read_text())
        old_settings, old_shards = _upgrade_settings(before["settings"]), before["shards"]
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as err:
        raise ValueError(f"{path}: not a run record of invert_dataset.py ({err})") from None
    hint = "use a new out folder, or fresh=true to discard the results in it"
    keys = sorted(set(old_settings) | set(record["settings"]))
    changed = [k for k in keys if old_settings.get(k) != record["settings"].get(k)]
    if changed:
        detail = ", ".join(f"{k}: {old_settings.get(k)!r} -> {record['settings'].get(k)!r}" for k in changed)
        raise ValueError(f"{out} holds latents made with other settings ({detail}); {hint}")
    if old_shards != record["shards"]:
        old_ids = {i for shard in old_shards for i in shard}
        new_ids = {i for shard in record["shards"] for i in shard}
        if old_ids != new_ids:
            what = f"{len(new_ids - old_ids)} frames are new, {len(old_ids - new_ids)} are gone (another manifest?)"
        else:
            what = f"the same frames in other shards ({len(old_shards)} shards before, {len(record['shards'])} now)"
        raise ValueError(f"{out} was started on other frames: {what}; {hint}")


def pending_work(
    out: Path, shards: list[list[Frame]], rank: int = 0, world: int = 1, sequential: bool = False
) -> list[tuple[int, list[Frame]]]:
    """What process ``rank`` of ``world`` still has to do in ``out``: ``(shard index, frames to invert)`` for each
    of its shards (every ``world``-th) that is not written yet, or that holds failed frames to retry
    (:func:`retry_frames`)."""
    todo: list[tuple[int, list[Frame]]] = []
    for k in range(rank, len(shards), world):
        if not shard_path(out, k).is_file():
            todo.append((k, shards[k]))
        elif failed := shard_failures(out, k):
            todo.append((k, retry_frames(shards[k], {f for f, _ in failed}, sequential)))
    return todo


RESULT_FILES = ("latents", "logs", "previews", "losses.jsonl", "failures.jsonl", "index.json", RUN_FILE)


def clear_results(out: Path) -> None:
    """Remove an earlier run's results from ``out`` (``fresh=true``); other files there are left alone."""
    for name in RESULT_FILES:
        target = out / name
        shutil.rmtree(target) if target.is_dir() else target.unlink(missing_ok=True)


def finalize(out: Path, num_shards: int, G: nn.Module, frames: list, quiet: bool = False) -> int | None:
    """Once every shard exists: merge the shard logs into losses.jsonl, the failed frames into failures.jsonl and
    write index.json, each atomically. Returns the number of failed frames (None while shards are missing, said
    in one line unless ``quiet``)."""
    missing = [k for k in range(num_shards) if not shard_path(out, k).is_file()]
    if missing:
        if not quiet:
            print(f"{len(missing)} shards are not finished yet (another process or a rerun will do them)")
        return None
    lines, failures = [], []
    for k in range(num_shards):
        lines.append((out / "logs" / f"shard_{k:06d}.jsonl").read_text())
        failures += shard_failures(out, k)
    atomic_write(out / "losses.jsonl", "".join(lines))
    paths = {frame.id: str(frame.path) for frame in frames}
    failed = [json.dumps({"id": i, "path": paths.get(i), "reason": r}) + "\n" for i, r in failures]
    atomic_write(out / "failures.jsonl", "".join(failed))
    index = {
        "num_shards": num_shards,
        "num_ws": G.num_ws,
        "w_dim": G.w_dim,
        "frames": sum(len(x.splitlines()) for x in lines),
        "failed": len(failures),
    }
    atomic_write(out / "index.json", json.dumps(index, indent=1))
    return len(failures)


def load_latents(out: str | Path) -> dict[str, np.ndarray]:
    """All finished latents of an ``invert_dataset.py`` output folder: frame id -> float32 [num_ws, w_dim]."""
    result: dict[str, np.ndarray] = {}
    for file in sorted((Path(out) / "latents").glob("shard_*.npz")):
        try:
            with np.load(file, allow_pickle=False) as data:
                ids, w = data["ids"], data["w"]
        except Exception as err:  # not a zip, truncated, a member missing or damaged, an object array
            reason = " ".join(f"{type(err).__name__}: {err}".split())[:200]
            problem = f"latent shard '{file}' is unusable ({reason}); delete it and rerun invert_dataset.py"
            raise ValueError(problem) from None
        if ids.ndim != 1 or w.ndim != 3 or len(ids) != len(w) or ids.dtype.kind not in "US":
            raise ValueError(f"latent shard '{file}' is unusable (ids {ids.shape} {ids.dtype}, w {w.shape})")
        if w.dtype != np.float32 or not np.isfinite(w).all():
            raise ValueError(f"latent shard '{file}' is unusable (w is {w.dtype}, or holds NaN or infinite values)")
        for i, latent in zip(ids, w):
            result[str(i)] = latent
    return result


def video_rounds(lengths: list[int], batch_size: int) -> Iterator[list[tuple[int, int]]]:
    """The order of batched sequential warm start: ``batch_size`` slots each hold one video (by position in
    ``lengths``, taken in order); a round is the next frame ``(video, index)`` of every occupied slot, and a slot
    whose video has ended takes the next video for the following round. Empty videos are passed over."""
    slots: list[list[int] | None] = [None] * max(1, batch_size)
    following = 0
    while True:
        for s, slot in enumerate(slots):
            while slot is None and following < len(lengths):
                if lengths[following]:
                    slot = slots[s] = [following, 0]
                following += 1
        frames = [(slot[0], slot[1]) for slot in slots if slot is not None]
        if not frames:
            return
        yield frames
        for s, slot in enumerate(slots):
            if slot is not None:
                slot[1] += 1
                if slot[1] == lengths[slot[0]]:
                    slots[s] = None


@dataclass
class InvertCalls:
    """The ``invert`` calls a run makes: the batch size of each call from the mean w (or ``initial_w``: first
    frames, or every frame without warm start) and of each call from a previous frame (warm)."""

    first: list[int]
    warm: list[int]


def invert_calls(lengths: list[int], batch_size: int, sequential: bool) -> InvertCalls:
    """The calls that inverting shards of these ``lengths`` makes (every frame's image readable): chunks of
    ``batch_size`` per shard, or (``sequential``) per round of :func:`video_rounds`, its first frames in one call
    and its warm frames in another."""
    if not sequential:
        return InvertCalls([min(batch_size, n - i) for n in lengths for i in range(0, n, batch_size)], [])
    calls = InvertCalls([], [])
    for frames in video_rounds(lengths, batch_size):
        first = sum(1 for _, t in frames if t == 0)
        calls.first += [first] if first else []
        calls.warm += [len(frames) - first] if len(frames) > first else []
    return calls


@dataclass
class DatasetInversion:
    """Inverts shards with one generator and loss on one device."""

    G: nn.Module
    loss_fn: InversionLoss
    options: InverterOptions
    device: torch.device
    batch_size: int = 4
    warm_start: str = "none"  # none | sequential (each frame of a video starts from the previous frame's latent)
    warm_steps: int = 200  # steps for frames that start from the previous frame
    preview: Callable[[Frame, torch.Tensor, np.ndarray], None] | None = None
    start: Callable[[torch.Tensor], torch.Tensor] | None = None  # targets -> W+ start (an encoder's); None: mean w

    def initial_w(self, images: torch.Tensor) -> torch.Tensor | None:
        """The start of cold-start targets [N, 3, res, res] (no previous frame to start from): ``start``'s W+
        [N, num_ws, w_dim] (``init=encoder:DIR``), or None for the thesis's mean w."""
        return None if self.start is None else self.start(images)

    def _targets(self, frames: list[Frame]) -> tuple[list[Frame], torch.Tensor, list[tuple[Frame, str]]]:
        ok, tensors, failed = [], [], []
        for frame in frames:
            try:
                image = read_image(frame.path)
                if image.shape[0] != image.shape[1]:
                    raise ImageReadError(frame.path, f"not square ({image.shape[1]}x{image.shape[0]}): not aligned")
            except ImageReadError as err:
                failed.append((frame, str(err)))
                continue
            image = resize_square(image, self.G.img_resolution)
            ok.append(frame)
            tensors.append(to_tensor(image))
        return ok, (torch.cat(tensors).to(self.device) if tensors else torch.empty(0)), failed

    def run(
        self, work: list[tuple[int, list[Frame]]], on_frames: Callable[[int], None] | None = None
    ) -> Iterator[tuple[int, dict]]:
        """Invert each ``(shard index, frames)`` of ``work``; yields ``(k, result)`` (see :meth:`run_shard`) as soon
        as shard k is complete. With ``warm_start="sequential"`` (a shard is one video) frame t of up to
        ``batch_size`` videos is inverted together, each from its own previous latent; a video's first frame (no
        previous latent) goes in a separate call with the full ``options.steps``; a slot whose video has ended
        takes the next video. Without ``joint_pass`` every latent equals the one of ``batch_size=1``."""
        if self.warm_start == "none":
            for k, frames in work:
                yield k, self._run_chunks(frames, on_frames)
            return
        if self.warm_start != "sequential":
            raise ValueError(f"warm_start must be 'none' or 'sequential', got {self.warm_start!r}")
        yield from self._run_videos(work, on_frames)

    def run_shard(self, frames: list[Frame], on_frames: Callable[[int], None] | None = None) -> dict:
        """Invert one shard; returns ``ids``, ``w``, ``losses`` and ``steps``, and the failures."""
        return next(self.run([(0, frames)], on_frames))[1]

    def _run_chunks(self, frames: list[Frame], on_frames: Callable[[int], None] | None) -> dict:
        shard = _ShardResult()
        for i in range(0, len(frames), self.batch_size):
            batch = frames[i : i + self.batch_size]
            ok, targets, failed = self._targets(batch)
            shard.failures += failed
            if ok:
                result = invert(self.G, targets, self.loss_fn, self.options, w_init=self.initial_w(targets))
                for j, frame in enumerate(ok):
                    shard.add(frame, result, j)
                    self._preview(frame, targets[j], result.w_plus[j])
            if on_frames:
                on_frames(len(batch))
        return shard.finish(self.G)

    def _run_videos(
        self, work: list[tuple[int, list[Frame]]], on_frames: Callable[[int], None] | None
    ) -> Iterator[tuple[int, dict]]:
        warm = dataclasses.replace(self.options, steps=self.warm_steps)
        shards = {v: _ShardResult() for v in range(len(work))}
        last_w: dict[int, torch.Tensor] = {}  # video -> [1, num_ws, w_dim], its last inverted frame's latent
        lengths = [len(frames) for _, frames in work]
        for v in [v for v, n in enumerate(lengths) if n == 0]:
            yield work[v][0], shards.pop(v).finish(self.G)
        for round_frames in video_rounds(lengths, self.batch_size):
            batch = [work[v][1][t] for v, t in round_frames]
            video_of = {frame.id: v for frame, (v, _) in zip(batch, round_frames)}
            ok, targets, failed = self._targets(batch)
            for frame, reason in failed:
                shards[video_of[frame.id]].failures.append((frame, reason))
            first = [j for j, frame in enumerate(ok) if video_of[frame.id] not in last_w]
            following = [j for j, frame in enumerate(ok) if video_of[frame.id] in last_w]
            for rows, options in ((first, self.options), (following, warm)):
                if not rows:
                    continue
                images = targets[rows]
                if options is warm:
                    w_init = torch.cat([last_w[video_of[ok[j].id]] for j in rows])
                else:
                    w_init = self.initial_w(images)
                result = invert(self.G, images, self.loss_fn, options, w_init=w_init)
                for r, j in enumerate(rows):
                    v = video_of[ok[j].id]
                    shards[v].add(ok[j], result, r)
                    last_w[v] = result.w_plus[r : r + 1].detach()
                    self._preview(ok[j], images[r], result.w_plus[r])
            if on_frames:
                on_frames(len(batch))
            for v, t in round_frames:
                if t == lengths[v] - 1:  # the video's last frame: its shard is complete
                    last_w.pop(v, None)
                    yield work[v][0], shards.pop(v).finish(self.G)

    def _preview(self, frame: Frame, target: torch.Tensor, w: torch.Tensor) -> None:
        if self.preview is not None:
            self.preview(frame, target, w)


@dataclass
class _ShardResult:
    """One shard's results as they come in."""

    ids: list[str] = dataclasses.field(default_factory=list)
    ws: list[np.ndarray] = dataclasses.field(default_factory=list)
    losses: dict[str, list[float]] = dataclasses.field(default_factory=dict)
    steps: list[int] = dataclasses.field(default_factory=list)
    failures: list[tuple[Frame, str]] = dataclasses.field(default_factory=list)

    def add(self, frame: Frame, result: InversionResult, row: int) -> None:
        self.ids.append(frame.id)
        self.ws.append(result.w_plus[row].detach().cpu().numpy())
        for term, value in result.losses.items():
            self.losses.setdefault(term, []).append(float(value[row]))
        self.steps.append(result.steps_run[row])

    def finish(self, G: nn.Module) -> dict:
        w = np.stack(self.ws) if self.ws else np.zeros((0, G.num_ws, G.w_dim), np.float32)
        return {
            "ids": self.ids,
            "w": w,
            "losses": {t: np.asarray(v) for t, v in self.losses.items()},
            "steps": self.steps,
            "failures": self.failures,
        }
