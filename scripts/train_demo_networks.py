"""Train a mapping network for digiface-dcgan-64 from a folder of talking-head clips, on a CPU:
prepare_dataset.py (aligned to digiface-dcgan-64's framing at 64 px) -> invert_dataset.py (video warm start,
``configs/invert_dataset_digiface.yaml``) -> train_mapper.py (``configs/train_mapper_digiface.yaml``), validation
split by speaker (``val_identities``), then a float16 copy of the mapper with its training record (``ship``).

    python -m scripts.train_demo_networks --config configs/train_demo_networks_digiface.yaml   # GRID, 8 speakers
    python -m scripts.train_demo_networks clips=my_clips identity=folder 'val_identities=[bob]' out=out/mine

Every step resumes: rerun the same command after a kill and it continues where it stopped. Writes OUT/prepared/,
OUT/latents/, OUT/mapper/ (a MAPPER_DIR), OUT/timings.json, and SHIP/ (mapper.safetensors in float16, mapper.json
tied to the generator's fingerprint, training_record.json: data, split, settings, losses, time).
"""

from __future__ import annotations

import csv
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

import stylegan3
from reenactment.model.mapper import load_mapper, save_mapper
from stylegan3.config import exit_with_error, parse_cli, save_config, to_dict
from stylegan3.io import atomic_folder, atomic_write, network_fingerprint

REPO = Path(__file__).resolve().parents[1]


@dataclass
class TrainDemoNetworksConfig:
    clips: str = ""  # folder of clips (searched recursively), e.g. ../shared/samples/grid
    out: str = "out/demo_networks"  # run folder (rerun with the same one to resume)
    network: str = "digiface-dcgan-64"  # the generator the latents and the mapper are for
    identity: str = "folder"  # identity (speaker) of each clip: file, folder, or a regex with (?P<identity>...)
    val_identities: list[str] = field(default_factory=list)  # speakers held out for validation (the split)
    fps: float = 12.5  # frames per second kept from each clip (half of GRID's 25: half the inversion time)
    workers: int = 1  # prepare_dataset.py processes
    invert_config: str = "configs/invert_dataset_digiface.yaml"  # invert_dataset.py settings
    invert_overrides: list[str] = field(default_factory=list)  # more invert_dataset.py key=value (e.g. steps=5)
    mapper_config: str = "configs/train_mapper_digiface.yaml"  # train_mapper.py settings
    mapper_overrides: list[str] = field(default_factory=list)  # more train_mapper.py key=value (e.g. epochs=1)
    ship: str = ""  # also write the float16 mapper with its training record here (empty: OUT/shipped)


def _timed(timings: dict, name: str, run) -> None:
    start = time.perf_counter()
    run()
    timings[name] = round(time.perf_counter() - start, 1)
    print(f"[{name}] {timings[name]:.1f} s")


def _log_rows(mapper_dir: Path) -> list[dict]:
    log = mapper_dir / "log.csv"
    if not log.is_file():
        return []
    with open(log, newline="") as f:
        return list(csv.DictReader(f))


def ship_mapper(mapper_dir: Path, ship: Path, G: torch.nn.Module, network: str, record: dict) -> Path:
    """The trained mapper as float16 (half the size; loads as float32) in ``ship``, whole or not at all: its
    ``mapper.json`` names the generator and its fingerprint, ``training_record.json`` says how it was made."""
    model = load_mapper(mapper_dir)
    frame_size = model.landmark_settings.get("frame_size")
    model = model.half()
    extra = {"generator": {"name": network, "fingerprint": network_fingerprint(G)}, "training": record["summary"]}

    def write(tmp: Path) -> None:
        save_mapper(model, tmp, extra, frame_size=frame_size)
        atomic_write(tmp / "training_record.json", json.dumps(record, indent=1) + "\n")

    return atomic_folder(ship, write)


def main(argv: list[str] | None = None) -> Path:
    cfg = parse_cli(TrainDemoNetworksConfig, argv, __doc__)
    if not cfg.clips or not Path(cfg.clips).is_dir():
        raise SystemExit(f"error: clips must be a folder of clips, got {cfg.clips!r}")
    from scripts import invert_dataset, prepare_dataset, train_mapper

    out = Path(cfg.out)
    ship = Path(cfg.ship) if cfg.ship else out / "shipped"
    try:
        G = stylegan3.load(cfg.network)
    except (OSError, ValueError) as err:
        exit_with_error(err)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml")
    timings: dict[str, float] = {}
    manifest = out / "prepared" / "manifest.jsonl"
    prepare_args = ["--input", cfg.clips, "--output", str(out / "prepared"), f"size={G.img_resolution}",
                    f"framing={G.framing.name}", f"fps={cfg.fps}", f"identity={cfg.identity}",
                    f"workers={cfg.workers}"]  # fmt: skip
    _timed(timings, "prepare", lambda: prepare_dataset.main(prepare_args))
    invert_args = ["--config", str(REPO / cfg.invert_config), f"input={manifest}", f"out={out / 'latents'}",
                   f"network={cfg.network}", *cfg.invert_overrides]  # fmt: skip
    _timed(timings, "invert", lambda: invert_dataset.main(invert_args))
    val = "[" + ", ".join(cfg.val_identities) + "]"
    mapper_args = ["--config", str(REPO / cfg.mapper_config), f"manifest={manifest}", f"latents={out / 'latents'}",
                   f"out={out / 'mapper'}", f"val_identities={val}", *cfg.mapper_overrides]  # fmt: skip
    _timed(timings, "train_mapper", lambda: train_mapper.main(mapper_args))
    atomic_write(out / "timings.json", json.dumps(timings, indent=1) + "\n")
    identities: dict[str, int] = {}
    for line in manifest.read_text().splitlines():
        row = json.loads(line)
        if "skipped" not in row:
            identities[row["identity"]] = identities.get(row["identity"], 0) + 1
    rows = _log_rows(out / "mapper")
    record = {
        "data": {"clips": str(cfg.clips), "fps": cfg.fps, "frames_per_identity": identities},
        "split": {
            "by": "identity",
            "validation": cfg.val_identities,
            "training": sorted(set(identities) - set(cfg.val_identities)),
        },  # fmt: skip
        "settings": {"config": to_dict(cfg), "invert": invert_args, "train_mapper": mapper_args},
        "losses": rows,
        "seconds": timings,
        "summary": {
            "validation_speakers": cfg.val_identities,
            "final": rows[-1] if rows else {},
            "seconds": round(sum(timings.values()), 1),
        },
    }
    ship_mapper(out / "mapper", ship, G, cfg.network, record)
    print(f"trained in {sum(timings.values()):.0f} s ({', '.join(f'{k} {v:.0f} s' for k, v in timings.items())}); "
          f"shipped mapper: {ship}")  # fmt: skip
    return ship


if __name__ == "__main__":
    main()
