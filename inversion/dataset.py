"""Inverting a whole dataset: work split into shards, shards split over processes, each shard written atomically.

A shard is a fixed list of frames (``shard_size`` consecutive manifest frames, or one whole video with
``warm_start="sequential"``); shard k belongs to rank ``k % world_size``. Finished shards are files
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

from .inverter import InverterOptions, invert
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
    for line_no, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}:{line_no}: not JSON ({err})") from None
        if "skipped" in rec or "image" not in rec:
            continue
        frames.append(
            Frame(f"{rec['video']}/{int(rec['frame']):06d}", path.parent / rec["image"], rec["video"], rec["frame"])
        )
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


def finalize(out: Path, num_shards: int, G: nn.Module, frames: list) -> int | None:
    """Once every shard exists: merge the shard logs into losses.jsonl, the failed frames into failures.jsonl and
    write index.json, each atomically. Returns the number of failed frames (None while shards are missing)."""
    missing = [k for k in range(num_shards) if not shard_path(out, k).is_file()]
    if missing:
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
        with np.load(file) as data:
            for i, w in zip(data["ids"], data["w"]):
                result[str(i)] = w
    return result


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

    def run_shard(self, frames: list[Frame], on_frames: Callable[[int], None] | None = None) -> dict:
        """Invert one shard; returns ``ids``, ``w``, ``losses`` and ``steps``, and the failures."""
        ids: list[str] = []
        ws: list[np.ndarray] = []
        losses: dict[str, list[float]] = {}
        steps: list[int] = []
        failures: list[tuple[Frame, str]] = []
        for batch, w_init, options in self._batches(frames):
            ok, targets, failed = self._targets(batch)
            failures += failed
            if not ok:
                continue
            if w_init is None:
                w_init = self.initial_w(targets)
            result = invert(self.G, targets, self.loss_fn, options, w_init=w_init)
            self._last_w = result.w_plus[-1:].detach()
            ids += [f.id for f in ok]
            ws.append(result.w_plus.cpu().numpy())
            for term, value in result.losses.items():
                losses.setdefault(term, []).extend(value.cpu().tolist())
            steps += result.steps_run
            if self.preview is not None:
                for frame, target, w in zip(ok, targets, result.w_plus):
                    self.preview(frame, target, w)
            if on_frames:
                on_frames(len(batch))
        w_all = np.concatenate(ws) if ws else np.zeros((0, self.G.num_ws, self.G.w_dim), np.float32)
        return {
            "ids": ids,
            "w": w_all,
            "losses": {t: np.asarray(v) for t, v in losses.items()},
            "steps": steps,
            "failures": failures,
        }

    def _batches(self, frames: list[Frame]) -> Iterator[tuple[list[Frame], torch.Tensor | None, InverterOptions]]:
        if self.warm_start == "none":
            for i in range(0, len(frames), self.batch_size):
                yield frames[i : i + self.batch_size], None, self.options
            return
        if self.warm_start != "sequential":
            raise ValueError(f"warm_start must be 'none' or 'sequential', got {self.warm_start!r}")
        # One frame at a time: each starts where the previous frame of its video ended.
        self._last_w = None
        warm = dataclasses.replace(self.options, steps=self.warm_steps)
        for frame in frames:
            yield [frame], self._last_w, (self.options if self._last_w is None else warm)
