"""Train the mapping network f (landmark-image difference -> W+ displacement) on an inverted dataset.

python scripts/train_mapper.py --config configs/train_mapper.yaml manifest=data/mead_aligned/manifest.jsonl \
    latents=data/mead_latents out=out/mapper
torchrun --nproc_per_node=8 scripts/train_mapper.py --config configs/train_mapper.yaml manifest=... latents=...
python scripts/train_mapper.py --config configs/train_mapper_smoke.yaml manifest=... latents=...

Writes OUT/checkpoints/epoch_NNN/ (mapper.safetensors, mapper.json, training_state.pt) after every epoch,
OUT/latest.json, OUT/log.csv, OUT/config.yaml and, at the end, OUT/mapper.safetensors + OUT/mapper.json (OUT is
then a MAPPER_DIR for reenact.py). Rerun the same command after a kill: it continues after the last finished
epoch with the same results.
"""

from __future__ import annotations

import logging
from pathlib import Path

from reenactment.model.training import TrainMapperConfig, train_mapper
from stylegan3.config import parse_cli


def main(argv: list[str] | None = None) -> Path:
    cfg = parse_cli(TrainMapperConfig, argv, __doc__)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        return train_mapper(cfg)
    except (OSError, ValueError) as err:
        raise SystemExit(f"error: {err}") from None


if __name__ == "__main__":
    main()
