"""Training the encoder start (``inversion.encoder``) on the generator's own samples, resumably.

Training pairs come from the generator itself: w from the mapping network (untruncated; with probability
``mixing_prob`` two latents mixed at a random layer, so that W+ is covered and not only W), the image G(w). The
objective is :func:`latent_loss` (``latent_weight * mean((E(G(w)) - w)^2)``), plus, when ``image_weight > 0``,
:func:`image_loss` through the frozen generator (``image_weight * mean((G(E(G(w))) - G(w))^2)``: one more generator
forward and backward per sample). Adam with a linear warmup and a cosine decay (:func:`warmup_cosine_lr`).

``pool_size > 0``: the images are generated once, ``pool_size`` of them, and each step draws its batch from that
pool (a CPU saving: the generator runs ``pool_size`` times instead of ``steps * batch_size`` times);
``pool_size = 0``: every step generates a fresh batch (the GPU setting: the encoder never sees a sample twice).

Everything random is a function of ``seed`` and a position (a pool block, a step, the held-out set), never of a
process's RNG state, so a run killed after any checkpoint and rerun gives the uninterrupted run's weights bit for
bit on the CPU (same thread count).

Outputs, all under ``out``: ``config.yaml``; ``training_state.pt`` (weights, optimiser, step, log; written
atomically every ``checkpoint_every`` steps, loads with ``weights_only=True``); ``log.csv`` (step, loss terms, the
held-out latent error of the encoder and of the mean w, lr, seconds); ``tensorboard/`` when TensorBoard is
installed; at the end ``encoder.safetensors`` + ``encoder.json``, so ``out`` is the DIR of ``init=encoder:DIR``.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

import stylegan3
from stylegan3.config import inline, save_config, to_dict
from stylegan3.io import atomic_write
from stylegan3.runtime import resolve_device, resolve_impl, tensorboard_writer
from stylegan3.sampling import synthesize

from .encoder import EncoderArchitecture, LatentEncoder, generator_record, save_encoder

log = logging.getLogger(__name__)

STATE_FILE = "training_state.pt"
LOG_FILE = "log.csv"
LOG_COLUMNS = ("step", "loss", "latent_loss", "image_loss", "val_latent_error", "mean_latent_error", "lr", "seconds")
# Keys that may differ when a run resumes: they change no number. The network may move: its fingerprint is checked.
RESUMABLE_CHANGES = frozenset(
    {"network", "out", "device", "impl", "stop_after", "resume", "tensorboard", "checkpoint_every"}
)
# Streams of randomness: (seed, stream, index) seeds one torch.Generator.
POOL, FRESH, BATCH, HELD_OUT = 0, 1, 2, 3


@dataclass
class TrainEncoderConfig:
    """train_encoder.py: every key with its default (settings for a 1024 px generator on a GPU)."""

    network: str = "stylegan3-r-ffhq-1024x1024"  # the generator to invert later (.pkl, weights folder, known name)
    out: str = "out/encoder"  # run folder; at the end the DIR of init=encoder:DIR (rerun with it to resume)
    architecture: EncoderArchitecture = inline(EncoderArchitecture)  # input_size, channels, blocks, hidden
    steps: int = 20000  # optimiser steps
    batch_size: int = 16  # samples per step
    lr: float = 3e-4  # Adam learning rate after the warmup
    warmup_steps: int = 500  # linear warmup from 0, then a cosine decay to 0 at ``steps``
    weight_decay: float = 0.0  # Adam's L2 term
    latent_weight: float = 1.0  # weight of mean((E(G(w)) - w)^2)
    image_weight: float = 0.0  # > 0: add this * mean((G(E(G(w))) - G(w))^2) through the frozen generator
    mixing_prob: float = 0.9  # share of samples whose W+ mixes two latents at a random layer (StyleGAN's 0.9)
    pool_size: int = 0  # > 0: draw batches from this many samples generated once (saves generator time on a CPU)
    val_size: int = 64  # held-out samples (their own seeds) for the logged latent error
    seed: int = 0  # initial weights and every sample
    log_every: int = 100  # log.csv / TensorBoard row every N steps (and the held-out error)
    checkpoint_every: int = 1000  # training_state.pt every N steps (the work a kill can lose)
    stop_after: int | None = None  # stop after this many steps in this run, as if killed (tests); rerun to go on
    device: str = "auto"  # auto (cuda if available), cpu, cuda, mps
    impl: str = "auto"  # generator ops: auto (triton on CUDA after a passed trial, else fast), fast, reference, triton
    resume: bool = True  # continue from out/training_state.pt when it exists (false: refuse a used folder)
    tensorboard: bool = True  # also write TensorBoard logs, when the tensorboard package is installed


def latent_loss(w_pred: torch.Tensor, w: torch.Tensor, weight: float = 1.0) -> torch.Tensor:
    """``weight * mean((w_pred - w)^2)`` over all [N, num_ws, w_dim] values; a float32 scalar."""
    return weight * (w_pred.float() - w.float()).square().mean()


def image_loss(image_pred: torch.Tensor, image: torch.Tensor, weight: float) -> torch.Tensor:
    """``weight * mean((image_pred - image)^2)`` over [N, 3, H, W] images in [-1, 1]; a float32 scalar."""
    return weight * (image_pred.float() - image.float()).square().mean()


def warmup_cosine_lr(step: int, lr: float, warmup_steps: int, steps: int) -> float:
    """The learning rate of (0-based) ``step``: linear warmup to ``lr`` over ``warmup_steps``, then cosine to 0."""
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, steps - warmup_steps)
    return lr * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def rng(seed: int, stream: int, index: int) -> torch.Generator:
    """A CPU generator for position ``index`` of ``stream``: the same numbers on any device and after a resume."""
    state = np.random.SeedSequence([seed, stream, index]).generate_state(1, np.uint64)[0]
    return torch.Generator().manual_seed(int(state))


@torch.no_grad()
def sample_latents(G: nn.Module, n: int, generator: torch.Generator, mixing_prob: float) -> torch.Tensor:
    """``n`` W+ latents [n, num_ws, w_dim] from the mapping network (untruncated), a share ``mixing_prob`` of them
    mixing two latents: the rows from a random layer on come from a second z. The draws are made on the CPU."""
    device = G.mapping.w_avg.device
    z = torch.randn(2, n, G.z_dim, generator=generator)
    mixed = torch.rand(n, generator=generator) < mixing_prob
    cut = torch.randint(1, max(2, G.num_ws), (n,), generator=generator)
    w1, w2 = G.mapping(z[0].to(device), None), G.mapping(z[1].to(device), None)
    rows = torch.arange(G.num_ws)[None] >= cut[:, None]
    take_second = (rows & mixed[:, None]).to(device)
    return torch.where(take_second[..., None], w2, w1).float()


@torch.no_grad()
def sample_pairs(G: nn.Module, n: int, generator: torch.Generator, mixing_prob: float) -> tuple[torch.Tensor, ...]:
    """(w [n, num_ws, w_dim], G(w) [n, 3, res, res] in [-1, 1]) for training or evaluating the encoder."""
    w = sample_latents(G, n, generator, mixing_prob)
    return w, synthesize(G, w)


def latent_error(encoder: LatentEncoder, w: torch.Tensor, images: torch.Tensor, chunk: int = 16) -> float:
    """Mean squared W+ error of the encoder's latents for ``images`` against their true ``w`` (eval mode)."""
    was_training = encoder.training
    encoder.eval()
    total = 0.0
    with torch.no_grad():
        for i in range(0, len(w), chunk):
            total += float((encoder(images[i : i + chunk]) - w[i : i + chunk]).square().sum())
    encoder.train(was_training)
    return total / w.numel()


def write_log_csv(path: Path, history: list[dict]) -> None:
    """The logged rows (floats in full precision, so equal runs give equal files), atomically."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(LOG_COLUMNS)
    for row in history:
        writer.writerow(["" if row.get(c) is None else repr(row[c]) for c in LOG_COLUMNS])
    atomic_write(path, buf.getvalue())


class EncoderTrainer:
    """Builds the run (generator, encoder, optimiser, samples) from a config and trains it step by step."""

    def __init__(self, cfg: TrainEncoderConfig, G: nn.Module | None = None):
        self.cfg, self.out = cfg, Path(cfg.out)
        for key in ("steps", "batch_size", "log_every", "checkpoint_every"):
            if getattr(cfg, key) < 1:
                raise ValueError(f"{key} must be >= 1, got {getattr(cfg, key)}")
        if cfg.pool_size and cfg.pool_size < cfg.batch_size:
            raise ValueError(f"pool_size {cfg.pool_size} is smaller than batch_size {cfg.batch_size}")
        self.device = resolve_device(cfg.device)
        self.G = (G if G is not None else stylegan3.load(cfg.network, device=self.device)).to(self.device)
        if G is None or cfg.impl != "auto":  # a generator passed in keeps its ops unless impl is named
            self.G.set_impl(resolve_impl(cfg.impl, self.device, self.G))
        self.G.eval().requires_grad_(False)
        self.generator = generator_record(self.G, cfg.network)
        torch.manual_seed(cfg.seed)  # the initial weights are a function of the seed alone
        arch = dataclasses.asdict(cfg.architecture)
        self.encoder = LatentEncoder(num_ws=self.G.num_ws, w_dim=self.G.w_dim, **arch).to(self.device)
        self.encoder.w_mean.copy_(self.G.mean_w())
        self.optimizer = torch.optim.Adam(self.encoder.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.history: list[dict] = []
        self.step = 0
        self.pending: dict[str, float] = {}  # sums of the loss terms since the last log row, and their "count"
        self.pool: tuple[torch.Tensor, torch.Tensor] | None = None
        self.held_out: tuple[torch.Tensor, torch.Tensor] | None = None

    # ----- samples

    def _blocks(self, stream: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` pairs of ``stream``, generated in blocks of ``batch_size`` (block b from rng(seed, stream, b))."""
        size = self.cfg.batch_size
        parts = [
            sample_pairs(self.G, min(size, n - start), rng(self.cfg.seed, stream, b), self.cfg.mixing_prob)
            for b, start in enumerate(range(0, n, size))
        ]
        return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The (w, image) pairs of ``step``: drawn from the pool, or generated fresh."""
        cfg = self.cfg
        if not cfg.pool_size:
            return sample_pairs(self.G, cfg.batch_size, rng(cfg.seed, FRESH, step), cfg.mixing_prob)
        if self.pool is None:
            self.pool = self._blocks(POOL, cfg.pool_size)
        index = torch.randint(cfg.pool_size, (cfg.batch_size,), generator=rng(cfg.seed, BATCH, step))
        index = index.to(self.device)
        return self.pool[0][index], self.pool[1][index]

    def held_out_error(self) -> tuple[float | None, float | None]:
        """Latent error on the held-out samples: (encoder, mean w); (None, None) without held-out samples."""
        if not self.cfg.val_size:
            return None, None
        if self.held_out is None:
            self.held_out = self._blocks(HELD_OUT, self.cfg.val_size)
        w, images = self.held_out
        mean = float((self.encoder.w_mean - w).square().mean())
        return latent_error(self.encoder, w, images), mean

    # ----- one step

    def losses(self, w: torch.Tensor, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """The objective's terms on one batch: ``loss``, ``latent_loss`` and ``image_loss`` (scalars)."""
        w_pred = self.encoder(images)
        terms = {"latent_loss": latent_loss(w_pred, w, self.cfg.latent_weight)}
        if self.cfg.image_weight:
            terms["image_loss"] = image_loss(synthesize(self.G, w_pred), images, self.cfg.image_weight)
        terms["loss"] = sum(terms.values())
        return terms

    def train_step(self, step: int) -> dict[str, float]:
        lr = warmup_cosine_lr(step, self.cfg.lr, self.cfg.warmup_steps, self.cfg.steps)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.encoder.train()
        terms = self.losses(*self.batch(step))
        self.optimizer.zero_grad(set_to_none=True)
        terms["loss"].backward()
        self.optimizer.step()
        return {k: float(v.detach()) for k, v in terms.items()} | {"lr": lr}

    # ----- checkpoints

    def save_checkpoint(self) -> None:
        state = {
            "step": self.step,
            "encoder": self.encoder.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "history": self.history,
            "pending": self.pending,
            "config": to_dict(self.cfg),
            "generator": self.generator["fingerprint"],
        }
        atomic_write(self.out / STATE_FILE, lambda tmp: torch.save(state, tmp))
        write_log_csv(self.out / LOG_FILE, self.history)

    def load_checkpoint(self) -> None:
        path = self.out / STATE_FILE
        state = torch.load(path, map_location=self.device, weights_only=True)
        now = to_dict(self.cfg)
        changed = sorted(k for k, v in now.items() if k not in RESUMABLE_CHANGES and state["config"].get(k) != v)
        if changed:
            detail = ", ".join(f"{k}: {state['config'].get(k)!r} -> {now[k]!r}" for k in changed)
            raise ValueError(f"{self.out} was trained with other settings ({detail}); use a new out folder")
        if state["generator"] != self.generator["fingerprint"]:
            raise ValueError(
                f"{self.out} was trained for another generator (fingerprint {state['generator'][:12]}), not for "
                f"{self.cfg.network} ({self.generator['fingerprint'][:12]}); use a new out folder"
            )
        self.encoder.load_state_dict(state["encoder"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.history = list(state["history"])
        self.pending = dict(state["pending"])
        self.step = int(state["step"])

    def training_record(self) -> dict:
        """What ``encoder.json`` says of the training: the settings and the last logged figures."""
        last = self.history[-1] if self.history else {}
        return {"config": to_dict(self.cfg), "steps": self.step, **{k: last.get(k) for k in LOG_COLUMNS[1:6]}}

    # ----- the whole run

    def fit(self) -> Path:
        """Resume if there is a checkpoint, train to ``steps`` (or ``stop_after`` more), save. Returns ``out``."""
        cfg = self.cfg
        if (self.out / STATE_FILE).is_file():
            if not cfg.resume:
                raise ValueError(f"{self.out} already holds a training run; use a new out folder or resume=true")
            self.load_checkpoint()
            log.info("resuming %s at step %d of %d", self.out, self.step, cfg.steps)
        self.out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, self.out / "config.yaml")
        end = cfg.steps if cfg.stop_after is None else min(cfg.steps, self.step + cfg.stop_after)
        writer = tensorboard_writer(self.out / "tensorboard", LOG_FILE) if cfg.tensorboard and self.step < end else None
        bar = tqdm(total=cfg.steps, initial=self.step, unit="step", desc="train encoder", dynamic_ncols=True)
        started = time.time()
        while self.step < end:
            figures = self.train_step(self.step)
            self.step += 1
            sums = self.pending
            terms = [(k, figures[k]) for k in ("loss", "latent_loss", "image_loss") if k in figures]
            for k, v in [*terms, ("count", 1.0)]:
                sums[k] = sums.get(k, 0.0) + v
            bar.update(1)
            bar.set_postfix(loss=f"{figures['loss']:.4f}", lr=f"{figures['lr']:.2e}", refresh=False)
            if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                val, mean = self.held_out_error()
                row = {"step": self.step, **{k: v / sums["count"] for k, v in sums.items() if k != "count"}}
                row |= {"val_latent_error": val, "mean_latent_error": mean, "lr": figures["lr"]}
                row["seconds"] = round(time.time() - started, 3)
                self.history.append(row)
                if val is not None:
                    bar.set_postfix(loss=f"{row['loss']:.4f}", held_out=f"{val:.4f}", mean_w=f"{mean:.4f}")
                if writer is not None:
                    for k, v in row.items():
                        if k != "step" and v is not None:
                            writer.add_scalar(k, v, self.step)
                    writer.flush()
                self.pending, started = {}, time.time()
            if self.step % cfg.checkpoint_every == 0 or self.step == end:
                self.save_checkpoint()
        bar.close()
        if writer is not None:
            writer.close()
        if self.step >= cfg.steps:
            save_encoder(self.encoder, self.out, self.generator, self.training_record())
        else:
            log.info("stopped at step %d of %d (stop_after=%d): rerun to continue", self.step, cfg.steps,
                     cfg.stop_after)  # fmt: skip
        return self.out


def train_encoder(cfg: TrainEncoderConfig, G: nn.Module | None = None) -> Path:
    """Train (or resume) the run ``cfg`` describes (``G``: the generator, already loaded). Returns ``out``."""
    return EncoderTrainer(cfg, G).fit()
