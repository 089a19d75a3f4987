"""Training pairs for the mapping network: (the identity's source frame, a driving frame of the same identity).

Pairs come from the ``prepare_dataset.py`` manifest, never from file order: every kept frame of an identity is a
driving frame (the source frame too, paired with itself, as in the thesis), and its source is the one frame of the
identity marked ``is_source``. Latents come from an ``invert_dataset.py`` output folder (or a dict of them).
Landmark images are drawn on the fly from the stored coordinates, so only coordinates and latents are in memory:
both are held as single contiguous arrays, which DataLoader worker processes share without copying.

Items hold the two landmark images as uint8 (cheap to make and to move);
:func:`~reenactment.model.mapper.landmark_delta` turns a batch into the network's [-1, 1] input on the training
device.

Splits (:meth:`LandmarkPairs.split`):
- ``identity`` (default): identities are shuffled with the seed and about ``val_fraction`` of them go wholly to
  validation, so validation measures generalisation to unseen people.
- ``frame``: pairs are shuffled with the seed and ``val_fraction`` of them go to validation, as the author's
  code did. Every validation identity also appears in training (with its very source frame and latent), so its
  validation loss is optimistic: it measures interpolation within known people.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, Subset

from inversion.dataset import load_latents
from reenactment.faces.landmark_image import render_landmark_image

from .prepare import read_manifest

log = logging.getLogger(__name__)

SPLITS = ("identity", "frame")
SOURCES = ("identity", "video")  # one source frame per identity (the thesis), or one per video


@dataclass(frozen=True)
class Pair:
    """One training pair: frame ids (``video/000123``) of the identity's source frame and of a driving frame."""

    identity: str
    source: str
    driving: str


def frame_id(record: dict) -> str:
    """The id ``invert_dataset.py`` gives a manifest frame: ``f"{video}/{frame:06d}"``."""
    return f"{record['video']}/{int(record['frame']):06d}"


def manifest_frame_size(manifest: str | os.PathLike, frame_size: int | None = None) -> int:
    """Side of the aligned frames the manifest's landmarks refer to.

    Read from ``prepare_options.json`` beside the manifest (its ``size``) when present, else ``frame_size``,
    else 1024. A ``frame_size`` that contradicts ``prepare_options.json`` is an error.
    """
    stamp = Path(manifest).parent / "prepare_options.json"
    if stamp.is_file():
        size = int(json.loads(stamp.read_text())["size"])
        if frame_size is not None and int(frame_size) != size:
            raise ValueError(f"frame_size={frame_size} contradicts {stamp} (size {size})")
        return size
    return 1024 if frame_size is None else int(frame_size)


def _examples(ids: list[str], n: int = 5) -> str:
    return ", ".join(ids[:n]) + (", ..." if len(ids) > n else "")


class LandmarkPairs(Dataset):
    """All (source, driving) pairs of a prepared and inverted dataset.

    Args:
        manifest: ``manifest.jsonl`` path (from ``prepare_dataset.py``), or its records.
        latents: an ``invert_dataset.py`` output folder, or a dict frame id -> float32 [num_ws, w_dim].
        image_size: side S of the landmark images drawn for the network (the thesis: 580).
        frame_size: side of the aligned frame the landmarks are given in; see :func:`manifest_frame_size`
            (read from ``prepare_options.json`` beside a manifest path when present).
        allow_missing: frames without a latent are an error (naming how many and which) unless this is set;
            then they are dropped with a warning, and an identity whose source frame has no latent is
            dropped whole.

    Every identity must have exactly one kept frame marked ``is_source`` (``prepare_dataset.py`` marks one per
    identity); an identity without one is an error naming it, since a silent skip would hide a broken manifest.

    Items are dicts: ``L_s``, ``L_d`` uint8 [S, S, 3] (strokes 153 on 0); ``w_s``, ``w_d`` float32
    [num_ws, w_dim]; ``identity``, ``source``, ``driving`` (str ids).
    """

    def __init__(
        self,
        manifest: str | os.PathLike | list[dict],
        latents: str | os.PathLike | dict[str, np.ndarray],
        image_size: int = 580,
        frame_size: int | None = None,
        allow_missing: bool = False,
        source: str = "identity",
    ):
        if source not in SOURCES:
            raise ValueError(f"source must be one of {', '.join(SOURCES)}, got {source!r}")
        if isinstance(manifest, (str, os.PathLike)):
            if not Path(manifest).is_file():
                raise FileNotFoundError(f"manifest not found: {manifest} (the manifest.jsonl of prepare_dataset.py)")
            self.frame_size = manifest_frame_size(manifest, frame_size)
            records = read_manifest(manifest)
        else:
            self.frame_size = 1024 if frame_size is None else int(frame_size)
            records = list(manifest)
        if not isinstance(latents, dict):
            if not (Path(latents) / "latents").is_dir():
                raise FileNotFoundError(f"no latents/ folder in {latents} (the output folder of invert_dataset.py)")
            latents = load_latents(latents)
        self.image_size = int(image_size)

        kept = [r for r in records if "skipped" not in r]
        if not kept:
            raise ValueError("the manifest has no kept frames")
        ids = [frame_id(r) for r in kept]
        missing = [i for i in ids if i not in latents]
        if missing and not allow_missing:
            raise ValueError(
                f"{len(missing)} of {len(ids)} frames have no latent ({_examples(missing)}); finish "
                "invert_dataset.py on this manifest, or set allow_missing=true to train without them"
            )
        sources: dict[str, list[str]] = {}
        for record, i in zip(kept, ids):
            if record.get("is_source"):
                sources.setdefault(record["identity"], []).append(i)
        identities = sorted({r["identity"] for r in kept})
        without = [p for p in identities if p not in sources]
        if without:
            raise ValueError(f"{len(without)} identities have no frame marked is_source: {_examples(without)}")
        several = [p for p in identities if len(sources[p]) > 1]
        if several:
            raise ValueError(f"{len(several)} identities have several frames marked is_source: {_examples(several)}")
        source_of = {p: s[0] for p, s in sources.items()}
        dropped_ids = sorted(p for p in identities if source_of[p] not in latents)
        if source == "video":  # each video's own best source frame (lowest source_score) among its inverted frames
            best: dict[str, tuple[float, str]] = {}
            for r, i in zip(kept, ids):
                key = r.get("video", r["identity"])
                score = r.get("source_score", 0.0)  # none (latent_clips.py): the video's first inverted frame
                if i in latents and (key not in best or score < best[key][0]):
                    best[key] = (score, i)
            video_source = {key: i for key, (_, i) in best.items()}
            dropped_ids = []
        if missing:
            log.warning(
                "%d of %d frames have no latent and are left out (%s)", len(missing), len(ids), _examples(missing)
            )
        if dropped_ids:
            log.warning(
                "%d identities are left out: their source frame has no latent (%s)",
                len(dropped_ids),
                _examples(dropped_ids),
            )

        dropped = set(dropped_ids)
        self.pairs: list[Pair] = [
            Pair(r["identity"], video_source[r.get("video", r["identity"])] if source == "video" else
                 source_of[r["identity"]], i)
            for r, i in zip(kept, ids)
            if i in latents and r["identity"] not in dropped
        ]  # fmt: skip
        if not self.pairs:
            raise ValueError("no training pairs are left")
        # One contiguous array each (not a dict of small arrays): forked DataLoader workers share the pages.
        used = sorted({p.driving for p in self.pairs} | {p.source for p in self.pairs})
        self._row = {i: k for k, i in enumerate(used)}
        first = np.asarray(latents[used[0]])
        self.latents = np.empty((len(used), *first.shape), dtype=np.float32)
        for k, i in enumerate(used):
            self.latents[k] = latents[i]
        landmarks = {i: r["landmarks"] for r, i in zip(kept, ids)}
        self.landmarks = np.asarray([landmarks[i] for i in used], dtype=np.float32)  # [frames, 70, 2]
        if self.landmarks.ndim != 3 or self.landmarks.shape[2] != 2:
            raise ValueError(f"manifest landmarks must be [points, 2] per frame, got {self.landmarks.shape[1:]}")
        self.num_ws, self.w_dim = first.shape
        self._source_images: dict[str, np.ndarray] = {}  # one per identity, drawn once per (worker) process

    def __len__(self) -> int:
        return len(self.pairs)

    def landmark_image(self, frame: str) -> np.ndarray:
        """[S, S, 3] uint8 landmark image of a frame id."""
        return render_landmark_image(self.landmarks[self._row[frame]], self.image_size, self.frame_size)

    def __getitem__(self, index: int) -> dict:
        pair = self.pairs[index]
        if pair.source not in self._source_images:
            self._source_images[pair.source] = self.landmark_image(pair.source)
        return {
            "L_s": self._source_images[pair.source].copy(),
            "L_d": self.landmark_image(pair.driving),
            "w_s": self.latents[self._row[pair.source]],
            "w_d": self.latents[self._row[pair.driving]],
            "identity": pair.identity,
            "source": pair.source,
            "driving": pair.driving,
        }

    def fingerprint(self) -> str:
        """sha256 of everything training reads: the pairs, their latents and landmarks, the frame size. Equal
        for the same manifest and latents wherever they are stored; different for any other data."""
        pairs = [[p.identity, p.source, p.driving] for p in self.pairs]
        digest = hashlib.sha256(json.dumps([self.frame_size, self.image_size, pairs]).encode())
        digest.update(np.ascontiguousarray(self.latents).tobytes())
        digest.update(np.ascontiguousarray(self.landmarks).tobytes())
        return digest.hexdigest()

    @property
    def identities(self) -> list[str]:
        """The identities with pairs, sorted."""
        return sorted({p.identity for p in self.pairs})

    def split_indices(
        self, by: str = "identity", val_fraction: float = 0.1, seed: int = 0, val_identities: list[str] | None = None
    ) -> tuple[list, list]:
        """(train, val) pair indices, deterministic for a seed; see the module docstring for ``by``.

        ``identity``: ``round(val_fraction * identities)`` identities (at least one when ``val_fraction > 0``)
        go to validation, or exactly ``val_identities`` when given (an unknown one is a ValueError naming it).
        ``frame``: ``round(val_fraction * pairs)`` pairs do. ``val_fraction = 0`` gives an empty validation set.
        """
        if by not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {by!r}")
        if val_identities:
            if by != "identity":
                raise ValueError("val_identities needs split=identity")
            unknown = sorted(set(val_identities) - set(self.identities))
            if unknown:
                raise ValueError(f"val_identities {unknown} are not in the data (identities: {self.identities})")
            train = [k for k, p in enumerate(self.pairs) if p.identity not in val_identities]
            val = [k for k, p in enumerate(self.pairs) if p.identity in val_identities]
            return train, val
        if not 0 <= val_fraction < 1:
            raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
        gen = torch.Generator().manual_seed(seed)
        if by == "frame":
            order = torch.randperm(len(self.pairs), generator=gen).tolist()
            n_val = round(val_fraction * len(order))
            return sorted(order[n_val:]), sorted(order[:n_val])
        identities = self.identities
        n_val = max(1, round(val_fraction * len(identities))) if val_fraction > 0 else 0
        if n_val >= len(identities):
            raise ValueError(
                f"an identity split with val_fraction={val_fraction} needs more than {len(identities)} identities "
                "(use split=frame or val_fraction=0)"
            )
        val_ids = {identities[k] for k in torch.randperm(len(identities), generator=gen)[:n_val].tolist()}
        train = [k for k, p in enumerate(self.pairs) if p.identity not in val_ids]
        val = [k for k, p in enumerate(self.pairs) if p.identity in val_ids]
        return train, val

    def split(self, by: str = "identity", val_fraction: float = 0.1, seed: int = 0) -> tuple[Subset, Subset]:
        """(train, val) subsets; see :meth:`split_indices`."""
        train, val = self.split_indices(by, val_fraction, seed)
        return Subset(self, train), Subset(self, val)
