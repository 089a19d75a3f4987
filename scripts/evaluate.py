"""Evaluate results the way the thesis's tables do: inversion (Table 4.1), self (4.3) or cross (4.4) reenactment.

python scripts/evaluate.py inversion --real data/celebahq_1000 --fake out/inverted --out out/eval_inv --compare-thesis
python scripts/evaluate.py self --real data/mead_test/driving --fake out/self --out out/eval_self
python scripts/evaluate.py cross --real data/mead_test/driving --fake out/cross --source data/mead_test/sources --out E
python scripts/evaluate.py cross pairs=pairs.csv out=E   # a manifest: columns real, fake[, source, name]

Pairs real/x.png with fake/x.png (relative path without extension; --source: a folder paired the same way or one
image). Writes OUT/metrics.json (metric -> number, plus "missing": {metric: reason}), OUT/metrics.md (the thesis's
table layout; --compare-thesis adds its published rows), OUT/info.json, OUT/per_pair.csv and OUT/config.yaml,
all at the end: a failed run leaves an earlier run's results as they were.
A metric whose weights file is missing is reported missing with the reason; the others are still computed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import ClassVar

from tqdm import tqdm

from reenactment.evaluation.evaluate import (
    MODES,
    EvaluationOptions,
    PairingError,
    evaluate,
    load_networks,
    pair_files,
    read_manifest,
    write_results,
)
from stylegan3.config import config_yaml, exit_with_error, inline, parse_cli
from stylegan3.images import ImageReadError


@dataclass
class EvaluateConfig:
    POSITIONAL: ClassVar[tuple[str, ...]] = ("mode",)
    # device, batch_size, size, lpips_size, ..., dlib_identity; first, so that config.yaml reads as it always has
    metrics: EvaluationOptions = inline(EvaluationOptions)
    mode: str = ""  # inversion, self or cross (may also be given as the first argument)
    real: str = ""  # ground truth: the inverted images' originals, or the driving frames
    fake: str = ""  # results, named like their ground truth
    source: str | None = None  # cross mode: source images (folder paired by name, or one image)
    pairs: str | None = None  # instead of real/fake/source: a CSV or JSON Lines manifest
    out: str = "out/evaluate"  # output folder
    compare_thesis: bool = False  # put the thesis's published rows above ours in metrics.md


def main(argv: list[str] | None = None) -> dict:
    cfg = parse_cli(EvaluateConfig, argv, __doc__)
    if cfg.mode not in MODES:
        raise SystemExit(f"error: give a mode: {', '.join(MODES)} (got {cfg.mode!r})")
    try:
        if cfg.pairs:
            pairs = read_manifest(cfg.pairs)
        elif cfg.real and cfg.fake:
            pairs = pair_files(cfg.real, cfg.fake, cfg.source)
        else:
            raise SystemExit("error: give --real DIR and --fake DIR (or pairs=MANIFEST)")
    except PairingError as err:
        exit_with_error(err)
    networks, missing = load_networks(cfg.mode, cfg.metrics)
    for name, reason in missing.items():
        print(f"{name} missing: {reason}")
    try:
        with tqdm(total=len(pairs), unit="pair", desc=cfg.mode) as bar:
            result = evaluate(cfg.mode, pairs, cfg.metrics, networks, missing, progress=lambda n: bar.update(n - bar.n))
    except (ImageReadError, PairingError, ValueError) as err:  # unreadable images, sizes that differ
        exit_with_error(err)
    # Results and the config that made them are written together, only now: a failed rerun leaves them as they were.
    paths = write_results(result, cfg.out, cfg.compare_thesis, config_yaml(cfg))
    print(paths["md"].read_text())
    print(f"wrote {paths['json']}, {paths['md']}")
    return json.loads(paths["json"].read_text())


if __name__ == "__main__":
    main()
