"""Convert an NVIDIA network pickle into our format (generator.safetensors + generator.json).

    python scripts/convert_pkl.py stylegan3-r-ffhq-1024x1024.pkl weights/sg3r

The pickle is read with an allow-list unpickler: no code from the file runs. ``stylegan3.load(OUT_DIR)``
reads the result back.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import stylegan3
from stylegan3.config import exit_with_error, parse_cli


@dataclass
class ConvertConfig:
    POSITIONAL: ClassVar[tuple[str, ...]] = ("pickle", "out_dir")
    pickle: str = ""  # NVIDIA .pkl (stylegan3 or stylegan2-ada-pytorch) or a known model name
    out_dir: str = ""  # folder to write generator.safetensors and generator.json into


def main(argv: list[str] | None = None) -> Path:
    cfg = parse_cli(ConvertConfig, argv, __doc__)
    if not cfg.pickle or not cfg.out_dir:
        exit_with_error("give a pickle and an output folder: convert_pkl.py G.pkl OUT_DIR")
    try:
        G = stylegan3.load(cfg.pickle)
    except (stylegan3.WeightsNotFoundError, stylegan3.WeightsFileError, OSError, ValueError) as err:
        exit_with_error(err)
    out_dir = Path(cfg.out_dir)
    stylegan3.save(G, out_dir)
    params = sum(p.numel() for p in G.parameters())
    print(f"wrote {out_dir}: {G.architecture}, {G.img_resolution} px, {G.num_ws} ws, {params:,} parameters")
    return out_dir


if __name__ == "__main__":
    main()
