"""Invert every frame of a prepared dataset into W+, resumably, on any number of processes (torchrun).

python scripts/invert_dataset.py --input data/mead_aligned/manifest.jsonl --out data/mead_latents --device cuda
torchrun --nproc_per_node=8 scripts/invert_dataset.py --input data/mead_aligned/manifest.jsonl --out data/mead_latents
python scripts/invert_dataset.py --input frames/ --out latents/ --warm_start sequential --warm_steps 200

Writes OUT/latents/shard_<k>.npz (ids, w float32 [n, num_ws, w_dim], per-term losses), OUT/logs/shard_<k>.jsonl,
and when all shards are done OUT/losses.jsonl (final per-term losses per frame) and OUT/index.json. Rerun the same
command after a kill: finished shards are kept, and the result is identical to an uninterrupted run.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
from tqdm import tqdm  # noqa: E402

import stylegan3  # noqa: E402
from inversion.dataset import DatasetInversion, frames_from_input, make_shards, shard_path, write_shard  # noqa: E402
from inversion.inverter import InverterOptions, synthesize  # noqa: E402
from inversion.losses import LossWeights, build_inversion_loss  # noqa: E402
from inversion.targets import to_uint8  # noqa: E402
from reenactment.image_io import write_image  # noqa: E402
from stylegan3.config import parse_cli, save_config  # noqa: E402


@dataclass
class InvertDatasetConfig(InverterOptions):
    input: str = ""  # manifest.jsonl from prepare_dataset.py, or a folder of aligned images
    out: str = "out/latents"  # output folder (rerun with the same one to resume)
    network: str = "stylegan3-r-ffhq-1024x1024"  # .pkl, weights folder or known name
    device: str = "auto"  # auto: cuda:LOCAL_RANK if CUDA is available, else cpu
    batch_size: int = 4  # images optimised together (each with its own latent and loss)
    shard_size: int = 32  # frames per output file (the work a kill can lose)
    warm_start: str = "none"  # none, or sequential: each video frame starts from the previous frame's latent
    warm_steps: int = 200  # steps for warm-started frames (sequential)
    limit: int | None = None  # only the first N frames (trying things out)
    previews: int = 0  # every N-th frame, save target | reconstruction under OUT/previews (0 = none)
    loss: LossWeights = field(default_factory=LossWeights)  # eq. 3.5 weights; 0 turns a term off
    loss_resolution: int | None = None  # LPIPS at full resolution (thesis) or at this size (e.g. 256)
    arcface: str | None = None  # model_ir_se50.pth path (default: the cache)
    alexnet: str | None = None  # torchvision AlexNet weights for LPIPS (default: torch hub cache / our cache)


def _distributed() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment; (0, 1, 0) when run directly."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))


def main(argv: list[str] | None = None) -> Path:
    cfg = parse_cli(InvertDatasetConfig, argv, __doc__)
    if not cfg.input:
        raise SystemExit("error: --input is required (a manifest.jsonl or a folder of images)")
    rank, world, local_rank = _distributed()
    if cfg.device == "auto":
        device = torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(cfg.device)
    if world > 1:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    out = Path(cfg.out)
    try:
        frames = frames_from_input(cfg.input)[: cfg.limit]
        G = stylegan3.load(cfg.network, device=device)
        loss_fn = build_inversion_loss(cfg.loss, cfg.loss_resolution, cfg.arcface, cfg.alexnet, device)
    except (OSError, ValueError) as err:
        raise SystemExit(f"error: {err}") from None
    shards = make_shards(frames, cfg.shard_size, by_video=cfg.warm_start == "sequential")
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out / "config.yaml")
    mine = [k for k in range(len(shards)) if k % world == rank and not shard_path(out, k).is_file()]
    options = InverterOptions(**{f.name: getattr(cfg, f.name) for f in dataclasses.fields(InverterOptions)})

    position = {frame.id: i for i, frame in enumerate(frames)} if cfg.previews else {}

    def preview(frame, target, w) -> None:
        if cfg.previews and position[frame.id] % cfg.previews == 0:
            with torch.no_grad():
                recon = to_uint8(synthesize(G, w[None]))[0]
            name = frame.id.replace("/", "__") + ".jpg"
            write_image(out / "previews" / name, np.concatenate([to_uint8(target[None])[0], recon], axis=1))

    runner = DatasetInversion(G, loss_fn, options, device, cfg.batch_size, cfg.warm_start, cfg.warm_steps, preview)
    total = sum(len(shards[k]) for k in mine)
    bar = tqdm(total=total, unit="frame", desc=f"rank {rank}/{world}", position=rank, dynamic_ncols=True)
    start = time.time()
    for k in mine:
        result = runner.run_shard(shards[k], on_frames=bar.update)
        write_shard(out, k, result["ids"], result["w"], result["losses"], result["steps"])
        for frame, reason in result["failures"]:
            tqdm.write(f"skipped {frame.id}: {reason}")
    bar.close()
    if world > 1:
        dist.barrier()
    if rank == 0:
        finalize(out, len(shards), G)
        print(f"{total} frames inverted here in {time.time() - start:.1f} s; all {len(shards)} shards done: {out}")
    if world > 1:
        dist.destroy_process_group()
    return out


def finalize(out: Path, num_shards: int, G: torch.nn.Module) -> None:
    """Merge the shard logs into losses.jsonl and write index.json, once every shard exists."""
    missing = [k for k in range(num_shards) if not shard_path(out, k).is_file()]
    if missing:
        print(f"{len(missing)} shards are not finished yet (another process or a rerun will do them)")
        return
    lines = []
    for k in range(num_shards):
        lines.append((out / "logs" / f"shard_{k:06d}.jsonl").read_text())
    (out / "losses.jsonl").write_text("".join(lines))
    index = {
        "num_shards": num_shards,
        "num_ws": G.num_ws,
        "w_dim": G.w_dim,
        "frames": sum(len(x.splitlines()) for x in lines),
    }
    (out / "index.json").write_text(json.dumps(index, indent=1))


if __name__ == "__main__":
    main()
