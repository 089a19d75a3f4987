"""Train an encoder start for inversion on the generator's own samples (no face dataset needed).

python scripts/train_encoder.py --config configs/train_encoder.yaml --network stylegan3-r-ffhq-1024x1024 \
    --out out/encoder --device cuda
python scripts/train_encoder.py --config configs/train_encoder_smoke.yaml \
    --network ../shared/fixtures/stylegan/sg2_64.pkl --out out/encoder_smoke      # CPU, minutes

Writes OUT/encoder.safetensors + OUT/encoder.json at the end (OUT is then the DIR of ``init=encoder:DIR`` for
invert.py, invert_dataset.py, reenact.py and the web page), OUT/training_state.pt every ``checkpoint_every``
steps, OUT/log.csv, OUT/config.yaml and OUT/tensorboard/. Rerun the same command after a kill: it continues from
the last checkpoint with the same results.
"""

from __future__ import annotations

import logging
from pathlib import Path

from inversion.encoder_training import TrainEncoderConfig, train_encoder
from stylegan3 import WeightsFileError, WeightsNotFoundError
from stylegan3.config import exit_with_error, parse_cli


def main(argv: list[str] | None = None) -> Path:
    cfg = parse_cli(TrainEncoderConfig, argv, __doc__)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        out = train_encoder(cfg)
    except (WeightsNotFoundError, WeightsFileError, OSError, ValueError) as err:
        exit_with_error(err)
    print(f"wrote {out}")
    return out


if __name__ == "__main__":
    main()
