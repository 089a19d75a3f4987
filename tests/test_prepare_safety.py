"""prepare_dataset.py never loses or mixes data: ids that would collide are refused, same-named files merged into
one identity are reported, workers die with a killed run, a second run cannot start beside a live one, and a
rerun removes the temporary files a killed run left."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import SAMPLES, ScriptRun, grid_frames, run_script
from PIL import Image

from reenactment.data.prepare import LOCK_FILE, find_jobs, read_manifest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = ["-m", "scripts.prepare_dataset"]  # run from REPO (cwd)
ARGS = ["size=64", "image_format=png"]


def prepare(inp: Path, out: Path, *extra: str) -> ScriptRun:
    """prepare_dataset.py's main in this process, one job at a time; the kill test starts real worker processes."""
    return run_script("prepare_dataset", "--input", inp, "--output", out, *ARGS, "workers=1", *extra)


def small_face(path: Path, person: str = "003") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.open(SAMPLES / "images" / f"london_{person}_neutral.jpg").resize((320, 320))
    image.save(path)
    return path


def test_files_that_would_share_an_id_are_refused_naming_both(tmp_path):
    for first, second in (("dup.jpg", "dup.png"), ("a b.jpg", "a_b.jpg")):
        inp = tmp_path / f"in_{second}"
        small_face(inp / first)
        small_face(inp / second, "021")
        with pytest.raises(ValueError, match="rename one"):
            find_jobs(inp)
        out = tmp_path / f"out_{second}"
        proc = prepare(inp, out)
        assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
        assert f"error: {first} and {second} would share" in proc.stderr
        assert not out.exists()  # refused before anything was written


def test_same_named_files_in_two_folders_are_reported_as_one_identity(tmp_path):
    inp = tmp_path / "in"
    small_face(inp / "studio_a" / "anna.jpg")
    small_face(inp / "studio_b" / "anna.jpg", "021")
    small_face(inp / "studio_b" / "ben.jpg", "061")
    proc = prepare(inp, tmp_path / "out")
    assert proc.returncode == 0, proc.stderr[-2000:]
    notes = [line for line in proc.stdout.splitlines() if line.startswith("note: ")]
    assert len(notes) == 1, proc.stdout
    assert "identity 'anna' is made of files in 2 folders: studio_a/anna.jpg, studio_b/anna.jpg" in notes[0]
    records = read_manifest(tmp_path / "out" / "manifest.jsonl")
    assert len({r["video"] for r in records}) == 3 == len({r["image"] for r in records})


def _spawned_children(pid: int) -> list[int]:
    """Live (not zombie) multiprocessing workers whose parent is ``pid``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        state, ppid = stat.rsplit(")", 1)[1].split()[:2]
        if int(ppid) == pid and state != "Z" and b"spawn_main" in cmdline:
            found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="reads the process table from /proc")
def test_killed_run_takes_its_workers_along_and_a_live_run_keeps_others_out(tmp_path):
    from reenactment.media.video import VideoWriter

    inp = tmp_path / "in"
    inp.mkdir()
    with VideoWriter(inp / "long_a.mp4", 25.0) as writer:  # 150 frames: each job runs for many seconds
        for frame in grid_frames("grid_lbax4n") * 2:
            writer.write(frame)
    (inp / "long_b.mp4").symlink_to(inp / "long_a.mp4")
    out = tmp_path / "out"
    cmd = [sys.executable, *SCRIPT, "--input", str(inp), "--output", str(out), *ARGS, "workers=2"]
    first = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 240
        while len(_spawned_children(first.pid)) < 2 and time.time() < deadline and first.poll() is None:
            time.sleep(0.1)
        workers = _spawned_children(first.pid)
        assert len(workers) == 2 and first.poll() is None, "the workers did not start"
        # Both workers at work (a frame of each video written): a worker killed while it still imports (seconds on
        # a loaded machine) has no parent-death signal yet and ends only once its imports are done.
        while len({p.parent for p in (out / "frames").glob("*/*/*")}) < 2 and time.time() < deadline:
            time.sleep(0.05)
        assert first.poll() is None, "the first run ended before both workers wrote a frame"
        lock = (out / LOCK_FILE).read_text()
        assert lock.startswith(f"pid {first.pid} ")
        # A second run on the same folder is refused while the first is alive, naming it.
        second = prepare(inp, out)
        assert second.returncode == 1 and "Traceback" not in second.stderr, second.stderr[-2000:]
        assert f"being prepared by another live run (pid {first.pid} " in second.stderr
        assert not (out / "parts").is_dir() or not any((out / "parts").glob("*.jsonl"))
        assert first.poll() is None, "the first run must still be working"
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    killed_at = time.time()
    while any(_alive(pid) for pid in workers) and time.time() < killed_at + 10:
        time.sleep(0.05)
    assert not any(_alive(pid) for pid in workers), "workers outlived their parent"
    time.sleep(1.0)
    assert not (out / "parts").is_dir() or not any((out / "parts").glob("*.jsonl")), "a worker wrote on"


def test_rerun_removes_leftovers_and_takes_over_a_dead_runs_lock(tmp_path):
    inp = tmp_path / "in"
    small_face(inp / "anna.jpg")
    out = tmp_path / "out"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    leftovers = [out / "frames" / "anna" / "anna" / ".000000.png.1a2b3c4d.partial", out / "parts" / ".x.jsonl.tmp"]
    for path in leftovers:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"half")
    (out / LOCK_FILE).write_text(f"pid {dead.stdout.strip()} on {os.uname().nodename}\n")  # a killed run's
    proc = prepare(inp, out)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert not any(path.exists() for path in leftovers)
    assert not (out / LOCK_FILE).exists()
    (record,) = read_manifest(out / "manifest.jsonl")
    image = np.asarray(Image.open(out / record["image"]))
    assert image.shape == (64, 64, 3)
