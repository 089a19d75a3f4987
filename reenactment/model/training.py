"""Training the mapping network (METHOD.md section 4), resumably, on one CPU or GPU or many (torchrun + DDP).

The objective is the thesis's eq. 3.6-3.7, ``10 * mean((w_d - (w_s + f(L_d - L_s)))^2)``, optionally plus an
image-space term through the frozen generator (the thesis's future work, off by default).

Outputs, all under ``out``:
- ``config.yaml``: the resolved config.
- ``checkpoints/epoch_NNN/``: ``mapper.safetensors`` + ``mapper.json`` (a MAPPER_DIR) and ``training_state.pt``
  (optimiser, gradient scaler, RNG states as tensors, the epoch and the log so far; loads with
  ``weights_only=True``). Each folder is written under a temporary name and renamed when complete.
- ``latest.json``: ``{"epoch": k, "checkpoint": "checkpoints/epoch_00k"}``, the last finished epoch; written
  last, so it never points at a half-written checkpoint.
- ``log.csv``: epoch, train_loss, val_loss, lr, seconds; ``tensorboard/`` when TensorBoard is installed.
- ``mapper.safetensors`` + ``mapper.json``: the final weights, so ``out`` itself is a MAPPER_DIR.

Settings beyond the thesis text (all off by default):
- ``lr_reset_each_epoch``: the author's code set the learning rate to 2e-3 at every epoch start. Nothing decays it
  in between, so this is a constant rate of that value from the first epoch on.
- ``weight_decay``: Adam's L2 term (the author's code: 1e-4).
- ``image_loss_weight`` with ``network``: adds ``weight * MSE(G(w_s + f), G(w_d))`` through the frozen generator.
  The target is the generator's image of the driving latent, not the driving photo: no image files are read, and
  the mapper is not asked to undo the inversion's own error. Cost: per sample, one generator forward + backward
  and one forward at the generator's resolution. The H100 benchmark (docs/performance.md, batch 1) puts SG3-R 1024
  forward + backward at about 14 GB (fp32) or 7 GB (mixed precision) and 0.5 s, so the thesis's batch of 32 does
  not fit one 80 GB GPU with this term, and a MEAD epoch (182k pairs) would take on the order of a GPU-day: use
  it to fine-tune with small batches, or with a smaller generator.

Exact resume: everything random is a function of (seed, epoch) — the initial weights of ``seed``, the shuffle of
epoch e of a generator seeded ``seed + e`` (DistributedSampler) — and the checkpoint holds every other piece of
state, so on the CPU a run stopped after any epoch and resumed gives the uninterrupted run's losses and weights
bit for bit (same thread count and world size; GPU kernels are not bitwise deterministic).
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import json
import logging
import math
import os
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from safetensors.torch import load_file
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, Subset
from torch.utils.data.distributed import DistributedSampler
from tqdm import tqdm

import stylegan3
from reenactment.data.mapper_data import LandmarkPairs
from stylegan3.config import inline, save_config, to_dict
from stylegan3.io import atomic_write
from stylegan3.runtime import DistEnv, init_distributed, resolve_device, resolve_impl, tensorboard_writer
from stylegan3.sampling import synthesize

from .mapper import WEIGHTS_FILE, MapperArchitecture, MappingNetwork, landmark_delta, save_mapper

log = logging.getLogger(__name__)

STATE_FILE = "training_state.pt"
LATEST_FILE = "latest.json"
LOG_FILE = "log.csv"
LOG_COLUMNS = ("epoch", "train_loss", "val_loss", "lr", "seconds")
MIXED_PRECISION = ("auto", "bf16", "fp16", "off")
# Keys that may differ when a run resumes: they do not change the numbers (or only say how long to train). The
# manifest and latents may move: their contents are checked instead (``LandmarkPairs.fingerprint``).
RESUMABLE_CHANGES = frozenset(
    {"epochs", "num_workers", "device", "impl", "resume", "tensorboard", "manifest", "latents"}
)


@dataclass
class TrainMapperConfig:
    """train_mapper.py: every key with its default (the thesis's settings, METHOD.md section 4)."""

    manifest: str = ""  # manifest.jsonl written by prepare_dataset.py
    latents: str = ""  # output folder of invert_dataset.py (holds latents/shard_*.npz)
    out: str = "out/mapper"  # run folder: checkpoints, logs, final weights (rerun with the same one to resume)
    epochs: int = 20  # thesis: 20
    batch_size: int = 32  # global batch (thesis: 32), split evenly over torchrun processes
    lr: float = 2e-4  # Adam learning rate (thesis: 2e-4)
    beta1: float = 0.9  # Adam beta1
    beta2: float = 0.999  # Adam beta2
    eps: float = 1e-4  # Adam epsilon (thesis text: 1e-4; author's code: 1e-8)
    weight_decay: float = 0.0  # Adam L2 weight decay (author's code: 1e-4)
    lr_reset_each_epoch: float | None = None  # set the lr to this at every epoch start (author's code: 2e-3)
    latent_loss_weight: float = 10.0  # the 10 of eq. 3.7
    image_loss_weight: float = 0.0  # > 0: add this * MSE(G(prediction), G(w_d)) through the frozen generator
    network: str | None = None  # generator for the image loss (.pkl, weights folder or known name)
    architecture: MapperArchitecture = inline(MapperArchitecture)  # image_size, channels, hidden
    frame_size: int | None = None  # aligned frame side of the landmarks (default: prepare_options.json, else 1024)
    split: str = "identity"  # identity (each person wholly in train or val) or frame (author's code; leaks)
    val_fraction: float = 0.1  # share of identities (or frames) held out for validation
    val_identities: list[str] | None = None  # these identities (speakers) are the validation set instead
    source: str = "identity"  # each pair's source frame: identity (one per person, the thesis) or video (per clip)
    allow_missing: bool = False  # train without frames that have no latent (else that is an error)
    seed: int = 0  # initial weights, split and shuffling
    num_workers: int = 8  # DataLoader processes per training process (landmark images are drawn on the fly)
    device: str = "auto"  # auto: cuda:LOCAL_RANK if CUDA is available, else cpu
    impl: str = "auto"  # generator ops: auto (triton on CUDA after a passed trial, else fast), fast, reference, triton
    mixed_precision: str = "auto"  # auto (bf16 on CUDA if supported, else fp16; off on CPU), bf16, fp16, off
    sync_batchnorm: bool = True  # BatchNorm statistics over the global batch under torchrun (CUDA only)
    resume: bool = True  # continue from out/latest.json when it exists (false: refuse to touch a used folder)
    tensorboard: bool = True  # also write TensorBoard logs, when the tensorboard package is installed


def latent_loss(w_pred: torch.Tensor, w_d: torch.Tensor, weight: float = 10.0) -> torch.Tensor:
    """Eq. 3.6-3.7: ``weight * mean((w_d - w_pred)^2)`` over all [N, num_ws, w_dim] values; a float32 scalar."""
    return weight * (w_d.float() - w_pred.float()).square().mean()


def image_loss(image_pred: torch.Tensor, image_target: torch.Tensor, weight: float) -> torch.Tensor:
    """``weight * mean((image_pred - image_target)^2)`` over [N, 3, H, W] images in [-1, 1]; a float32 scalar."""
    return weight * (image_pred.float() - image_target.float()).square().mean()


def autocast_dtype(mode: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``mixed_precision`` on ``device`` (None: full float32)."""
    if mode not in MIXED_PRECISION:
        raise ValueError(f"mixed_precision must be one of {MIXED_PRECISION}, got {mode!r}")
    if mode == "auto":
        if device.type != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if mode == "fp16" and device.type != "cuda":
        raise ValueError("mixed_precision=fp16 needs a CUDA device (use bf16 or off on the CPU)")
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "off": None}[mode]


def rng_state() -> dict[str, torch.Tensor]:
    """Every RNG state of this process as tensors (torch CPU and CUDA, numpy, Python's ``random``)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy_keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
        "numpy_rest": torch.tensor([pos, has_gauss, gauss], dtype=torch.float64),
        "python": torch.tensor([version, *internal], dtype=torch.int64),
        "python_gauss": torch.tensor([math.nan if gauss_next is None else gauss_next], dtype=torch.float64),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            state[f"cuda_{i}"] = s
    return state


def set_rng_state(state: dict[str, torch.Tensor]) -> None:
    """Restore what :func:`rng_state` returned."""
    torch.set_rng_state(state["torch"])
    pos, has_gauss, gauss = state["numpy_rest"].tolist()
    np.random.set_state(("MT19937", state["numpy_keys"].numpy().astype(np.uint32), int(pos), int(has_gauss), gauss))
    version, *internal = state["python"].tolist()
    gauss_next = state["python_gauss"].item()
    random.setstate((version, tuple(internal), None if math.isnan(gauss_next) else gauss_next))
    cuda = [state[k] for k in sorted(k for k in state if k.startswith("cuda_"))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda[: torch.cuda.device_count()])


def write_log_csv(path: Path, history: list[dict]) -> None:
    """Write the per-epoch rows (floats with full precision, so equal runs give equal files), atomically."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(LOG_COLUMNS)
    for row in history:
        writer.writerow(["" if row[c] is None else repr(row[c]) for c in LOG_COLUMNS])
    atomic_write(path, buf.getvalue())


def read_log_csv(path: str | os.PathLike) -> list[dict]:
    """Rows of a ``log.csv``: epoch as int, the other columns as float (None where empty)."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return [{k: (int(v) if k == "epoch" else (float(v) if v else None)) for k, v in row.items()} for row in rows]


class MapperTrainer:
    """Builds the run (data, network, optimiser) from a config and trains it epoch by epoch."""

    def __init__(self, cfg: TrainMapperConfig, env: DistEnv | None = None):
        self.cfg = cfg
        self.env = env or DistEnv()
        self.out = Path(cfg.out)
        self.device = resolve_device(cfg.device, self.env.local_rank)
        self.amp_dtype = autocast_dtype(cfg.mixed_precision, self.device)
        if cfg.batch_size % self.env.world:
            raise ValueError(f"batch_size {cfg.batch_size} does not split over {self.env.world} processes")
        if cfg.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {cfg.epochs}")
        self.local_batch = cfg.batch_size // self.env.world
        if self.local_batch < 2:
            raise ValueError(f"batch_size {cfg.batch_size} gives {self.local_batch} per process; BatchNorm needs 2+")

        self.data = LandmarkPairs(
            cfg.manifest, cfg.latents, cfg.architecture.image_size, cfg.frame_size, cfg.allow_missing, cfg.source
        )
        train_idx, val_idx = self.data.split_indices(cfg.split, cfg.val_fraction, cfg.seed, cfg.val_identities)
        if len(train_idx) < 2:
            raise ValueError(f"only {len(train_idx)} training pairs: BatchNorm needs at least 2")
        self.train_set = Subset(self.data, train_idx)
        self.val_set = Subset(self.data, val_idx[self.env.rank :: self.env.world])  # no padding: exact sums
        self.num_val = len(val_idx)

        torch.manual_seed(cfg.seed)  # the initial weights are a function of the seed alone
        arch = dataclasses.asdict(cfg.architecture)
        model = MappingNetwork(num_ws=self.data.num_ws, w_dim=self.data.w_dim, **arch)
        self.mapper = model.to(self.device)
        if self.env.world > 1 and cfg.sync_batchnorm and self.device.type == "cuda":
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
            self.mapper = model
        self.model: nn.Module = model
        if self.env.world > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.model = DistributedDataParallel(model, device_ids=ids)
        self.optimizer = torch.optim.Adam(
            model.parameters(), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps, weight_decay=cfg.weight_decay
        )
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)
        self.generator = self._image_loss_generator()
        self.history: list[dict] = []
        self.start_epoch = 0

    def _image_loss_generator(self) -> nn.Module | None:
        if self.cfg.image_loss_weight == 0:
            return None
        if not self.cfg.network:
            raise ValueError("image_loss_weight > 0 needs network= (the generator the latents were inverted with)")
        G = stylegan3.load(self.cfg.network, device=self.device)
        G.set_impl(resolve_impl(self.cfg.impl, self.device, G))
        if (G.num_ws, G.w_dim) != (self.data.num_ws, self.data.w_dim):
            raise ValueError(
                f"generator {self.cfg.network} has W+ [{G.num_ws}, {G.w_dim}], "
                f"the latents are [{self.data.num_ws}, {self.data.w_dim}]"
            )
        return G.eval().requires_grad_(False)

    # ----- one step, one epoch

    def _autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def _loss(self, model: nn.Module, batch: dict) -> torch.Tensor:
        """The objective on one batch (train or eval, whatever mode ``model`` is in)."""
        dev = self.device
        delta = landmark_delta(batch["L_d"].to(dev, non_blocking=True), batch["L_s"].to(dev, non_blocking=True))
        w_s = batch["w_s"].to(dev, non_blocking=True)
        w_d = batch["w_d"].to(dev, non_blocking=True)
        with self._autocast():
            w_pred = w_s + model(delta).float()
        loss = latent_loss(w_pred, w_d, self.cfg.latent_loss_weight)
        if self.generator is not None:
            with self._autocast():
                image_pred = synthesize(self.generator, w_pred)
                with torch.no_grad():
                    image_target = synthesize(self.generator, w_d)
            loss = loss + image_loss(image_pred, image_target, self.cfg.image_loss_weight)
        return loss

    def _loader(self, name: str, dataset: Dataset, sampler=None) -> DataLoader:
        """The DataLoader of ``name`` (train or val), made once: its worker processes live for the whole run
        (``persistent_workers``) instead of starting again every epoch. The items hold no randomness (the
        order is the sampler's, a function of (seed, epoch)), so the workers' seeds change nothing."""
        loaders = self.__dict__.setdefault("_loaders", {})
        if name not in loaders:
            loaders[name] = DataLoader(
                dataset,
                batch_size=self.local_batch,
                sampler=sampler,
                shuffle=False,
                num_workers=self.cfg.num_workers,
                persistent_workers=self.cfg.num_workers > 0,
                pin_memory=self.device.type == "cuda",
                generator=torch.Generator().manual_seed(self.cfg.seed),
            )
        return loaders[name]

    def _all_sum(self, values: list[float]) -> list[float]:
        if self.env.world == 1:
            return values
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return t.tolist()

    def train_epoch(self, epoch: int) -> float:
        """One pass over this rank's share of the shuffled training pairs; returns the mean loss over all ranks."""
        if "_train_sampler" not in self.__dict__:
            self._train_sampler = DistributedSampler(
                self.train_set, num_replicas=self.env.world, rank=self.env.rank, shuffle=True, seed=self.cfg.seed
            )
        self._train_sampler.set_epoch(epoch)  # the order is a function of (seed, epoch)
        if self.cfg.lr_reset_each_epoch is not None:
            for group in self.optimizer.param_groups:
                group["lr"] = self.cfg.lr_reset_each_epoch
        self.model.train()
        total, count = 0.0, 0
        loader = self._loader("train", self.train_set, self._train_sampler)
        bar = tqdm(
            loader, desc=f"epoch {epoch + 1}/{self.cfg.epochs}", unit="batch", disable=not self.env.is_main, leave=False
        )
        for batch in bar:
            n = len(batch["w_d"])
            if n < 2:  # BatchNorm1d cannot train on one sample; the same on every rank (equal shares)
                continue
            loss = self._loss(self.model, batch)
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            total += loss.item() * n
            count += n
            bar.set_postfix(loss=f"{total / count:.4f}")
        bar.close()
        total, count = self._all_sum([total, float(count)])
        return total / count

    @torch.no_grad()
    def evaluate(self, epoch: int) -> float | None:
        """Mean objective over the whole validation set (eval mode), all ranks together; None without one."""
        if self.num_val == 0:
            return None
        if self.env.world > 1:  # evaluate (and save) rank 0's BatchNorm statistics everywhere
            for buffer in self.mapper.buffers():
                dist.broadcast(buffer, 0)
        self.mapper.eval()  # the bare network: no DDP collectives, ranks may hold different batch counts
        total, count = 0.0, 0
        for batch in self._loader("val", self.val_set):
            n = len(batch["w_d"])
            total += self._loss(self.mapper, batch).item() * n
            count += n
        total, count = self._all_sum([total, float(count)])
        return total / count

    # ----- checkpoints

    def checkpoint_dir(self, epoch: int) -> Path:
        """Folder of the checkpoint written after ``epoch`` epochs (1-based)."""
        return self.out / "checkpoints" / f"epoch_{epoch:03d}"

    def _weights_extra(self, epoch: int) -> dict:
        row = self.history[-1] if self.history else {}
        return {
            "epoch": epoch,
            "train_loss": row.get("train_loss"),
            "val_loss": row.get("val_loss"),
            "split": self.cfg.split,
            "seed": self.cfg.seed,
        }

    def save_checkpoint(self, epoch: int) -> Path:
        """Write checkpoints/epoch_NNN (weights + training state) under a temporary name, rename, then point
        latest.json at it. Main process only."""
        final = self.checkpoint_dir(epoch)
        tmp = final.with_name(f".{final.name}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        save_mapper(self.mapper, tmp, self._weights_extra(epoch), frame_size=self.data.frame_size)
        state = {
            "epoch": epoch,
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": rng_state(),
            "history": self.history,
            "config": to_dict(self.cfg),
            "world_size": self.env.world,
            "data": self.data.fingerprint(),
        }
        torch.save(state, tmp / STATE_FILE)
        shutil.rmtree(final, ignore_errors=True)  # a leftover of a run killed after the rename, before latest.json
        os.replace(tmp, final)
        write_log_csv(self.out / LOG_FILE, self.history)
        pointer = {"epoch": epoch, "checkpoint": final.relative_to(self.out).as_posix()}
        atomic_write(self.out / LATEST_FILE, json.dumps(pointer) + "\n")
        return final

    def load_checkpoint(self, folder: Path) -> None:
        """Continue from a checkpoint folder: weights, optimiser, scaler, RNG, epoch and log."""
        state = torch.load(folder / STATE_FILE, map_location="cpu", weights_only=True)
        now = to_dict(self.cfg)
        changed = sorted(k for k, v in now.items() if k not in RESUMABLE_CHANGES and state["config"].get(k) != v)
        if changed:
            detail = ", ".join(f"{k}: {state['config'].get(k)!r} -> {now[k]!r}" for k in changed)
            raise ValueError(
                f"{self.out} was trained with other settings ({detail}); use a new out folder or resume=false there"
            )
        if "data" not in state:
            log.warning("%s predates the data check: not verifying that the manifest and latents are the same", folder)
        elif state["data"] != self.data.fingerprint():  # paths may move; the data may not change
            raise ValueError(
                f"{self.out} was trained on other data: the manifest {self.cfg.manifest} or the latents "
                f"{self.cfg.latents} differ from the run's; use a new out folder or resume=false there"
            )
        self.mapper.load_state_dict(load_file(str(folder / WEIGHTS_FILE), device=str(self.device)))
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        set_rng_state(state["rng"])
        self.history = list(state["history"])
        self.start_epoch = int(state["epoch"])

    def latest_checkpoint(self) -> Path | None:
        """The folder latest.json points at, or None when the run has no finished epoch."""
        pointer = self.out / LATEST_FILE
        if not pointer.is_file():
            return None
        return self.out / json.loads(pointer.read_text())["checkpoint"]

    # ----- the whole run

    def fit(self) -> Path:
        """Resume if there is a checkpoint (and ``resume``), train the remaining epochs, write the final weights.
        Returns ``out``."""
        cfg, main = self.cfg, self.env.is_main
        latest = self.latest_checkpoint()
        if latest is not None:
            if not cfg.resume:
                raise ValueError(f"{self.out} already holds checkpoints; use a new out folder or resume=true")
            self.load_checkpoint(latest)
            if main:
                log.info("resuming %s after epoch %d", self.out, self.start_epoch)
        if main:
            self.out.mkdir(parents=True, exist_ok=True)
            save_config(cfg, self.out / "config.yaml")
            n_train = len(self.train_set)
            log.info(
                "%d training pairs, %d validation pairs (%s split) of %d identities; %s, batch %d on %d process(es)",
                n_train, self.num_val, cfg.split, len(self.data.identities), self.device, cfg.batch_size,
                self.env.world,
            )  # fmt: skip
        writer = tensorboard_writer(self.out / "tensorboard", LOG_FILE) if main and cfg.tensorboard else None
        for epoch in range(self.start_epoch, cfg.epochs):
            start = time.time()
            train_loss = self.train_epoch(epoch)
            val_loss = self.evaluate(epoch)
            row = {
                "epoch": epoch + 1,
                "train_loss": train_loss,
                "val_loss": val_loss,
                "lr": self.optimizer.param_groups[0]["lr"],
                "seconds": round(time.time() - start, 3),
            }
            self.history.append(row)
            if main:
                self.save_checkpoint(epoch + 1)
                val_text = "-" if val_loss is None else f"{val_loss:.5f}"
                log.info("epoch %d/%d: train %.5f, val %s, %.1f s", epoch + 1, cfg.epochs, train_loss, val_text,
                         row["seconds"])  # fmt: skip
                if writer is not None:
                    writer.add_scalar("loss/train", train_loss, epoch + 1)
                    if val_loss is not None:
                        writer.add_scalar("loss/val", val_loss, epoch + 1)
                    writer.add_scalar("lr", row["lr"], epoch + 1)
                    writer.flush()
            if self.env.world > 1:
                dist.barrier()  # nobody starts the next epoch (or ends) before the checkpoint is on disk
        if writer is not None:
            writer.close()
        if main:
            save_mapper(self.mapper, self.out, self._weights_extra(len(self.history)), frame_size=self.data.frame_size)
        return self.out


def train_mapper(cfg: TrainMapperConfig) -> Path:
    """Train (or resume) the run that ``cfg`` describes, on this process's share of a torchrun job. Returns ``out``."""
    if not cfg.manifest or not cfg.latents:
        raise ValueError("manifest= and latents= are required (prepare_dataset.py and invert_dataset.py outputs)")
    env = DistEnv.from_environ()
    device = resolve_device(cfg.device, env.local_rank)
    init_distributed(device, env)  # also cuDNN's benchmark mode on CUDA (fixed input size)
    try:
        return MapperTrainer(cfg, env).fit()
    finally:
        if env.world > 1:
            dist.destroy_process_group()
