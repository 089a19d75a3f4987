"""Invert every frame of a prepared dataset into W+, resumably, on any number of processes (torchrun).

python scripts/invert_dataset.py --input data/mead_aligned/manifest.jsonl --out data/mead_latents --device cuda
torchrun --nproc_per_node=8 scripts/invert_dataset.py --input data/mead_aligned/manifest.jsonl --out data/mead_latents
python scripts/invert_dataset.py --input frames/ --out latents/ --warm_start sequential --warm_steps 200
python scripts/invert_dataset.py --input data/mead_aligned/manifest.jsonl --device cuda estimate=true  # the cost
python scripts/invert_dataset.py --config configs/invert_dataset_fast.yaml --input frames/ --out latents/

Writes OUT/latents/shard_<k>.npz (ids, w float32 [n, num_ws, w_dim], per-term losses, failed frames),
OUT/logs/shard_<k>.jsonl, OUT/run.json (the settings and each shard's frames), and when all shards are done
OUT/losses.jsonl (final per-term losses per frame), OUT/failures.jsonl (frames whose image could not be used, and
why) and OUT/index.json. Rerun the same command after a kill: finished shards are kept, frames that failed are
retried, and the result is identical to an uninterrupted run. A rerun with other settings or other frames is
refused (fresh=true discards the folder's earlier results instead); so is a rerun with another encoder
(``init=encoder:DIR``: frames without a previous frame to start from start from the encoder's latent).
estimate=true times a few steps on the device and prints the projected device-hours of the whole input instead of
inverting it (it writes nothing).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

import stylegan3
from inversion.dataset import (
    RUN_FILE,
    DatasetInversion,
    check_run,
    clear_results,
    finalize,
    frames_from_input,
    make_shards,
    merge_shard,
    pending_work,
    read_shard,
    run_record,
    write_shard,
)
from inversion.encoder import InitOptions
from inversion.estimate import estimate_run
from inversion.inverter import InverterOptions, check_loss_applies, resolve_joint_pass
from inversion.losses import LossOptions
from stylegan3.config import inline, parse_cli, save_config, to_dict
from stylegan3.images import write_image
from stylegan3.io import atomic_write
from stylegan3.runtime import DistEnv, init_distributed, resolve_device, resolve_impl
from stylegan3.sampling import (
    synthesize,
    to_uint8,
)


@dataclass
class InvertDatasetConfig:
    inverter: InverterOptions = inline(InverterOptions)  # steps, lr, beta1, beta2, eps, early_stop_*, joint_pass, ...
    start: InitOptions = inline(InitOptions)  # init: mean (the thesis) or encoder:DIR (first frames start there)
    input: str = ""  # manifest.jsonl from prepare_dataset.py, or a folder of aligned images
    out: str = "out/latents"  # output folder (rerun with the same one to resume)
    network: str = "stylegan3-r-ffhq-1024x1024"  # .pkl, weights folder or known name
    device: str = "auto"  # auto: cuda:LOCAL_RANK if CUDA is available, else cpu
    impl: str = "auto"  # generator ops: auto (triton on CUDA when Triton imports, else fast), fast, reference, triton
    batch_size: int = 4  # images optimised together (each with its own latent and loss)
    shard_size: int = 32  # frames per output file (the work a kill can lose)
    warm_start: str = "none"  # none, or sequential: each video frame starts from the previous frame's latent
    warm_steps: int = 200  # steps for warm-started frames (sequential)
    limit: int | None = None  # only the first N frames (trying things out)
    previews: int = 0  # every N-th frame, save target | reconstruction under OUT/previews (0 = none)
    losses: LossOptions = inline(LossOptions)  # loss.*, loss_resolution, arcface, alexnet
    fresh: bool = False  # discard OUT's earlier results and start over (else a rerun must match run.json)
    estimate: bool = False  # time estimate_steps steps of a batch, print the whole input's cost, write nothing
    estimate_steps: int = 5  # timed steps per measured batch (estimate=true)


# Keys that do not change any latent: they may differ when a run resumes. ``batch_size`` too, unless
# ``joint_pass`` (then the batch's company changes the float32 rounding).
RESUMABLE_KEYS = frozenset(
    {"input", "out", "device", "impl", "limit", "previews", "log_every", "fresh", "estimate", "estimate_steps"}
)


def result_settings(cfg: InvertDatasetConfig, device: torch.device) -> dict:
    """The settings a resumed run must share with the run that started the folder (``joint_pass`` as resolved on
    ``device``: ``auto`` on the CPU resumes a folder of ``false``)."""
    settings = {k: v for k, v in to_dict(cfg).items() if k not in RESUMABLE_KEYS}
    settings["joint_pass"] = resolve_joint_pass(cfg.inverter.joint_pass, device)
    if not settings["joint_pass"]:
        settings.pop("batch_size")
    if cfg.start.init == "mean":
        settings.pop("init")  # the thesis's start: run folders from before ``init`` existed still resume
    else:
        settings["encoder"] = cfg.start.fingerprint()  # its weights: a retrained encoder in the same folder differs
    return settings


def check_framing(source: str, G: torch.nn.Module) -> None:
    """A ValueError when ``source`` (a manifest.jsonl) was prepared with another face crop than ``G`` draws faces
    in (``prepare_options.json`` beside it; folders prepared before the key existed used FFHQ's)."""
    stamp = Path(source).parent / "prepare_options.json"
    if Path(source).is_file() and stamp.is_file():
        framing = json.loads(stamp.read_text()).get("framing", "ffhq")
        if framing != G.framing.name:
            raise ValueError(
                f"{source} was prepared with framing={framing}, but the generator draws faces in the "
                f"{G.framing.name} framing: prepare it again with framing={G.framing.name}"
            )


def main(argv: list[str] | None = None) -> Path:
    cfg = parse_cli(InvertDatasetConfig, argv, __doc__)
    if not cfg.input:
        raise SystemExit("error: --input is required (a manifest.jsonl or a folder of images)")
    env = DistEnv.from_environ()
    rank, world = env.rank, env.world
    try:
        device = resolve_device(cfg.device, env.local_rank)
    except ValueError as err:
        raise SystemExit(f"error: {err}") from None
    out = Path(cfg.out)
    try:
        frames = frames_from_input(cfg.input)[: cfg.limit]
        shards = make_shards(frames, cfg.shard_size, by_video=cfg.warm_start == "sequential")
        record = run_record(result_settings(cfg, device), shards)
        if not cfg.fresh and not cfg.estimate:
            check_run(out, record)  # every rank reads the same file: all refuse together
        G = stylegan3.load(cfg.network, device=device)
        G.set_impl(resolve_impl(cfg.impl, device))
        check_framing(cfg.input, G)
        check_loss_applies(G, cfg.losses.loss)
        loss_fn = cfg.losses.build(device)
        encoder = cfg.start.load(G, cfg.network)
    except (OSError, ValueError) as err:
        raise SystemExit(f"error: {err}") from None
    runner = DatasetInversion(G, loss_fn, cfg.inverter, device, cfg.batch_size, cfg.warm_start, cfg.warm_steps)
    runner.start = None if encoder is None else encoder.start
    if cfg.estimate:  # each process times its own device; no folder, no latents
        try:
            cost = estimate_run(runner, shards, cfg.estimate_steps, world)
        except ValueError as err:
            raise SystemExit(f"error: {err}") from None
        if rank == 0:
            passes = "one pass per batch" if record["settings"]["joint_pass"] else "one pass per image"
            where = f"on {device}, batch_size {cfg.batch_size} ({passes}), warm_start {cfg.warm_start}"
            print(f"estimate for {cfg.input} {where}:")
            print(cost.report(early_stop=cfg.inverter.early_stop_patience > 0))
        return out
    init_distributed(device, env)
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        if cfg.fresh:
            clear_results(out)
        atomic_write(out / RUN_FILE, json.dumps(record) + "\n")
        save_config(cfg, out / "config.yaml")
    if world > 1:
        dist.barrier()  # the folder is set up before anyone looks at its shards
    todo = pending_work(out, shards, rank, world, sequential=cfg.warm_start == "sequential")

    position = {frame.id: i for i, frame in enumerate(frames)} if cfg.previews else {}

    def preview(frame, target, w) -> None:
        if cfg.previews and position[frame.id] % cfg.previews == 0:
            with torch.no_grad():
                recon = to_uint8(synthesize(G, w[None]))[0]
            name = frame.id.replace("/", "__") + ".jpg"
            write_image(out / "previews" / name, np.concatenate([to_uint8(target[None])[0], recon], axis=1))

    runner.preview = preview
    total = sum(len(frames_k) for _, frames_k in todo)
    bar = tqdm(total=total, unit="frame", desc=f"rank {rank}/{world}", position=rank, dynamic_ncols=True)
    start = time.time()
    work = dict(todo)
    for k, result in runner.run(todo, on_frames=bar.update):  # each shard as soon as it is complete
        frames_k = work[k]
        result["failures"] = [(frame.id, reason) for frame, reason in result["failures"]]
        if len(frames_k) < len(shards[k]):  # a retry of some frames: keep the others' results
            result = merge_shard(shards[k], read_shard(out, k), result)
        write_shard(out, k, result["ids"], result["w"], result["losses"], result["steps"], result["failures"])
        for frame_id, reason in result["failures"]:
            tqdm.write(f"failed {frame_id}: {reason}")
    bar.close()
    # No collective wait here: ranks get unequal work (shards k % world, videos of different lengths), and a rank
    # blocked in a barrier for longer than NCCL's timeout (10 minutes) aborts the whole job. Each rank merges when
    # it finds every shard written (the last to finish does it; two at once write the same files atomically),
    # and a rerun merges whatever a killed job left.
    failed = finalize(out, len(shards), G, frames, quiet=world > 1)
    seconds = time.time() - start
    if failed is not None:
        done = f"{total} frames inverted here in {seconds:.1f} s; all {len(shards)} shards done"
        if failed:
            done += f"; {failed} frames failed (listed in {out / 'failures.jsonl'}): rerun to retry them"
        print(f"{done}: {out}")
    elif world > 1:
        print(f"rank {rank}: {total} frames inverted in {seconds:.1f} s; the last rank to finish merges the shards")
    if world > 1:
        dist.destroy_process_group()
    return out


if __name__ == "__main__":
    main()
