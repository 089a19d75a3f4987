"""The reenactment web page on localhost: upload a photo and a driving clip, pick options, play the result.

python scripts/app.py                                          # the make demo networks (UNTRAINED)
python scripts/app.py --network stylegan3-r-ffhq-1024x1024 --mapper runs/mapper
python scripts/app.py network=[runs/g1,runs/g2] mapper=[runs/m1,runs/m2] port=8080

Serves on http://127.0.0.1:7860 (host=0.0.0.0 to let other machines in); no share link, no analytics.
"""

from __future__ import annotations

from reenactment.app import AppConfig, serve
from stylegan3.config import parse_cli


def main(argv: list[str] | None = None) -> None:
    cfg = parse_cli(AppConfig, argv, __doc__)
    try:
        serve(cfg)
    except ValueError as err:
        raise SystemExit(f"error: {err}") from None


if __name__ == "__main__":
    main()
