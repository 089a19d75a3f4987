"""prepare_dataset.py on the four GRID clips: manifest contents, a killed run that resumes, bad files."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
from conftest import GRID_CLIPS, SAMPLES, ScriptRun, run_script

from reenactment.data.prepare import find_jobs, identity_regex, mouth_openness, read_manifest, yaw_asymmetry
from stylegan3.config import parse_cli

REPO = Path(__file__).resolve().parents[1]
SCRIPT = ["-m", "scripts.prepare_dataset"]  # run from REPO (cwd)
ARGS = ["size=128", "image_format=jpg", "jpeg_quality=90"]


@pytest.fixture(scope="module")
def grid_input(tmp_path_factory) -> Path:
    """The four GRID clips (symlinked, not copied) plus an unreadable file and a photo without a face."""
    folder = tmp_path_factory.mktemp("grid_in")
    for clip in GRID_CLIPS:
        (folder / f"{clip}.mpg").symlink_to(SAMPLES / "videos" / f"{clip}.mpg")
    (folder / "broken.mp4").write_bytes(b"")
    from PIL import Image

    Image.fromarray(np.full((120, 160, 3), 100, np.uint8)).save(folder / "noface.png")
    return folder


def start_script(inp: Path, out: Path, *extra: str) -> subprocess.Popen:
    """A real process (it is killed mid-run)."""
    cmd = [sys.executable, *SCRIPT, "--input", str(inp), "--output", str(out), *ARGS, *extra]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO)


def prepare(inp: Path, out: Path, *extra: str) -> ScriptRun:
    """prepare_dataset.py's main in this process, one job at a time (test_prepare_safety starts real workers)."""
    return run_script("prepare_dataset", "--input", inp, "--output", out, *ARGS, "workers=1", *extra)


@pytest.fixture(scope="module")
def full_run(grid_input, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("grid_full")
    run = prepare(grid_input, out)
    assert run.returncode == 0, run.stdout + run.stderr
    return out


def test_manifest_contents(full_run):
    records = read_manifest(full_run / "manifest.jsonl")
    frames = [r for r in records if "skipped" not in r]
    assert sorted({r["identity"] for r in frames}) == sorted(c for c in GRID_CLIPS)
    assert len(frames) == 4 * 75  # every GRID frame has a face; 25 fps kept
    for r in frames:
        assert {"identity", "video", "frame", "image", "landmarks", "is_source"} <= r.keys()
        assert (full_run / r["image"]).is_file()
        pts = np.asarray(r["landmarks"])
        assert pts.shape == (70, 2) and (pts > 0).all() and (pts < 128).all()
    # One source per identity, frontal and with the mouth closed compared with that identity's other frames.
    for clip in GRID_CLIPS:
        own = [r for r in frames if r["identity"] == clip]
        sources = [r for r in own if r["is_source"]]
        assert len(sources) == 1
        pts = np.asarray([r["landmarks"] for r in own])
        src = np.asarray(sources[0]["landmarks"])
        assert mouth_openness(src) <= np.quantile(mouth_openness(pts), 0.25)
        assert abs(yaw_asymmetry(src)) <= np.quantile(np.abs(yaw_asymmetry(pts)), 0.5)
    skipped = {r["video"]: r["skipped"] for r in records if "skipped" in r}
    assert skipped["broken"].startswith("unreadable") and "broken.mp4" in skipped["broken"]
    assert skipped["noface"] == "no face"
    assert (full_run / "config.yaml").is_file()


def test_killed_run_resumes_to_the_same_manifest(grid_input, full_run, tmp_path):
    out = tmp_path / "resumed"
    proc = start_script(grid_input, out, "workers=1")
    parts = out / "parts"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if parts.is_dir() and len(list(parts.glob("*.jsonl"))) >= 2:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = {p.name for p in parts.glob("*.jsonl")}
    assert 2 <= len(done_before) < 6 and not (out / "manifest.jsonl").exists()
    mtimes = {p.name: p.stat().st_mtime_ns for p in parts.glob("*.jsonl")}
    proc = start_script(grid_input, out, "workers=1")
    log, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, log
    # Finished files were not redone; the manifest equals the uninterrupted run's, line for line.
    assert all(parts.joinpath(n).stat().st_mtime_ns == m for n, m in mtimes.items())
    assert (out / "manifest.jsonl").read_text() == (full_run / "manifest.jsonl").read_text()
    for r in read_manifest(out / "manifest.jsonl"):
        if "image" in r:
            assert (out / r["image"]).read_bytes() == (full_run / r["image"]).read_bytes()
    leftovers = [p for p in out.rglob("*") if p.name.endswith(".tmp")]
    assert not leftovers


def test_resume_with_other_settings_is_refused(grid_input, full_run):
    run = prepare(grid_input, full_run, "size=256")
    assert run.returncode == 1 and "other settings (size)" in run.stderr and "Traceback" not in run.stderr


def test_identity_patterns(tmp_path):
    mead = tmp_path / "M003" / "video" / "front" / "neutral" / "level_1"
    mead.mkdir(parents=True)
    (mead / "001.mp4").write_bytes(b"x")
    angry = tmp_path / "M003" / "video" / "front" / "angry" / "level_1"
    angry.mkdir(parents=True)
    (angry / "001.mp4").write_bytes(b"x")
    (tmp_path / "notes.txt").write_text("not media")
    jobs, unmatched = find_jobs(tmp_path, "mead")
    assert [(j.identity, j.rel) for j in jobs] == [("M003", "M003/video/front/neutral/level_1/001.mp4")]
    assert unmatched == 1
    jobs, _ = find_jobs(tmp_path, "folder")
    assert {j.identity for j in jobs} == {"M003"}
    jobs, _ = find_jobs(tmp_path, r"level_(?P<identity>\d)")
    assert {j.identity for j in jobs} == {"1"}
    with pytest.raises(ValueError, match="identity"):
        identity_regex(r"(?P<who>\w+)")


def test_cli_accepts_flags_and_key_value():
    from dataclasses import dataclass

    @dataclass
    class Cfg:
        input: str = ""
        size: int = 1024

    cfg = parse_cli(Cfg, ["--input", "a/b", "--size=64"])
    assert (cfg.input, cfg.size) == ("a/b", 64)
    assert parse_cli(Cfg, ["size=32"]).size == 32


def test_cli_positional_after_config_file(tmp_path):
    @dataclass
    class Cfg:
        POSITIONAL: ClassVar[tuple[str, ...]] = ("image",)
        ALIASES: ClassVar[dict[str, str]] = {"-o": "out"}
        image: str = ""
        out: str = ""
        steps: int = 1
        align: bool = True
        concat: bool = False

    config = tmp_path / "c.yaml"
    config.write_text("steps: 7\n")
    cfg = parse_cli(Cfg, ["--config", str(config), "face.png", "-o", "x.mp4", "--no-align", "--concat"])
    assert (cfg.image, cfg.out, cfg.steps, cfg.align, cfg.concat) == ("face.png", "x.mp4", 7, False, True)


def test_cli_list_positional_takes_every_bare_value():
    @dataclass
    class Cfg:
        POSITIONAL: ClassVar[tuple[str, ...]] = ("images",)
        images: list[str] = field(default_factory=list)
        size: int = 1

    cfg = parse_cli(Cfg, ["a.jpg", "--size", "3", "b c.jpg", "d.jpg"])
    assert (cfg.images, cfg.size) == (["a.jpg", "b c.jpg", "d.jpg"], 3)
    assert parse_cli(Cfg, []).images == []


def test_resume_with_another_identity_pattern_is_refused(grid_input, full_run):
    run = prepare(grid_input, full_run, "identity=(?P<identity>[a-z]+)")
    assert run.returncode == 1 and "other settings (identity)" in run.stderr and "Traceback" not in run.stderr


def test_only_input_problems_become_skipped(grid_input, tmp_path, monkeypatch):
    # A bug (here a TypeError in one job) stops the run with its traceback and records nothing for that file,
    # so the next run does it again; unreadable files and faceless photos still become "skipped" records.
    import reenactment.data.prepare as prepare

    jobs = [j for j in find_jobs(grid_input)[0] if j.rel in ("broken.mp4", "noface.png")]
    real = prepare.process_job

    def buggy(job, *args):
        if job.rel == "noface.png":
            raise TypeError("a programming error")
        return real(job, *args)

    opts = prepare.PrepareOptions(size=64, image_format="jpg")
    monkeypatch.setattr(prepare, "process_job", buggy)
    with pytest.raises(TypeError, match="a programming error"):
        prepare.prepare_dataset(jobs, tmp_path, opts, workers=1)
    assert [p.name for p in (tmp_path / "parts").glob("*.jsonl")] == ["broken.mp4.jsonl"]
    monkeypatch.setattr(prepare, "process_job", real)
    records = prepare.prepare_dataset(jobs, tmp_path, opts, workers=1)
    assert {r["video"]: r["skipped"].split(":")[0] for r in records} == {"broken": "unreadable", "noface": "no face"}
