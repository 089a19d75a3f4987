"""Convert an NVIDIA network pickle into our format (generator.safetensors + generator.json).

    python scripts/convert_pkl.py stylegan3-r-ffhq-1024x1024.pkl weights/sg3r

The pickle is read with an allow-list unpickler: no code from the file runs. ``stylegan3.load(OUT_DIR)``
reads the result back.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import stylegan3
from stylegan3.config import exit_with_error


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("pickle", help="NVIDIA .pkl (stylegan3 or stylegan2-ada-pytorch) or a known model name")
    parser.add_argument("out_dir", type=Path, help="folder to write generator.safetensors and generator.json into")
    args = parser.parse_args(argv)
    try:
        G = stylegan3.load(args.pickle)
    except (stylegan3.WeightsNotFoundError, stylegan3.WeightsFileError, OSError, ValueError) as err:
        exit_with_error(err)
    stylegan3.save(G, args.out_dir)
    params = sum(p.numel() for p in G.parameters())
    print(f"wrote {args.out_dir}: {G.architecture}, {G.img_resolution} px, {G.num_ws} ws, {params:,} parameters")
    return args.out_dir


if __name__ == "__main__":
    main()
