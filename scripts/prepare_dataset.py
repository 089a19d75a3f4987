"""Prepare a training set: align every frame of a folder of videos/photos to FFHQ crops, with landmarks.

python scripts/prepare_dataset.py --input data/MEAD --output data/mead_aligned --identity mead --workers 8
python scripts/prepare_dataset.py --input ../shared/samples/videos --output out/grid size=256 image_format=jpg

Writes OUT/frames/<identity>/<video>/<frame>.png, OUT/manifest.jsonl (one record per frame, or per skipped
frame/file, see reenactment/data/prepare.py) and OUT/config.yaml. Rerun the same command after a crash or a kill:
finished files are kept and only the rest is processed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from reenactment.data.prepare import (
    OutputInUseError,
    PrepareOptions,
    find_jobs,
    lock_output,
    merged_identities,
    part_path,
    prepare_dataset,
)
from stylegan3.config import exit_with_error, inline, parse_cli, save_config, to_dict
from stylegan3.framing import get_framing
from stylegan3.io import atomic_write


@dataclass
class PrepareConfig:
    prepare: PrepareOptions = inline(PrepareOptions)  # fps, size, image_format, jpeg_quality, backend, tracking
    input: str = ""  # folder of videos and/or images (searched recursively)
    output: str = ""  # output folder (created; rerun with the same one to resume)
    identity: str = "file"  # identity of each file: file, folder, mead, or a regex with (?P<identity>...)
    workers: int = 2  # parallel processes (one input file each)


def check_resume(out: Path, cfg: PrepareConfig) -> None:
    """Refuse to mix outputs made with different settings in one folder: every ``PrepareOptions`` field and the
    identity pattern (it decides the identity, and so the source frame, of every record)."""
    wanted = to_dict(cfg.prepare)
    wanted["identity"] = cfg.identity
    stamp = out / "prepare_options.json"
    if stamp.is_file():
        before = json.loads(stamp.read_text())
        before.setdefault("framing", "ffhq")  # folders prepared before the key existed
        changed = sorted(k for k in wanted if before.get(k) != wanted[k])
        if changed:
            raise SystemExit(
                f"error: {out} was prepared with other settings ({', '.join(changed)}); "
                "use a new output folder or delete it"
            )
    else:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write(stamp, json.dumps(wanted, indent=1))


def main(argv: list[str] | None = None) -> Path:
    cfg = parse_cli(PrepareConfig, argv, __doc__)
    if not cfg.input or not cfg.output:
        raise SystemExit("error: --input and --output are required")
    if not Path(cfg.input).is_dir():
        raise SystemExit(f"error: input folder {cfg.input} does not exist")
    try:
        get_framing(cfg.prepare.framing)
    except ValueError as err:
        exit_with_error(err)
    out = Path(cfg.output)
    try:
        jobs, unmatched = find_jobs(Path(cfg.input), cfg.identity)
    except ValueError as err:  # a bad pattern, or two files that would share an id
        exit_with_error(err)
    if not jobs:
        raise SystemExit(f"error: no images or videos under {cfg.input} match the identity pattern {cfg.identity!r}")
    try:
        with lock_output(out):  # one run per output folder at a time
            return run(cfg, out, jobs, unmatched)
    except OutputInUseError as err:
        exit_with_error(err)


def run(cfg: PrepareConfig, out: Path, jobs: list, unmatched: int) -> Path:
    check_resume(out, cfg)
    save_config(cfg, out / "config.yaml")
    if unmatched:
        print(f"{unmatched} media files do not match identity pattern {cfg.identity!r} and are left out")
    if cfg.identity == "file":
        for line in merged_identities(jobs):
            print(f"note: {line} (identity=file: same-named files are one identity; identity=folder keeps them apart)")
    bar = tqdm(total=len(jobs), unit="file", desc="prepare")
    bar.update(sum(part_path(out, job).is_file() for job in jobs))  # finished by an earlier run
    totals = {"records": 0}

    def progress(job, n_records: int) -> None:
        totals["records"] += n_records
        bar.set_postfix(last=job.rel, records=totals["records"])
        bar.update(1)

    records = prepare_dataset(jobs, out, cfg.prepare, workers=cfg.workers, progress=progress)
    bar.close()
    kept = sum("skipped" not in r for r in records)
    skipped = len(records) - kept
    identities = len({r["identity"] for r in records if "skipped" not in r})
    print(f"{kept} frames of {identities} identities, {skipped} skipped; manifest: {out / 'manifest.jsonl'}")
    return out


if __name__ == "__main__":
    main()
