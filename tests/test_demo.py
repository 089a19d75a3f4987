"""make demo's path (scripts/demo.py) runs offline from nothing but the installed packages."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from reenactment.media.video import probe_video

REPO = Path(__file__).resolve().parents[1]


def test_demo_runs_offline(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "REENACT_OFFLINE": "1", "REENACT_CACHE": str(tmp_path / "cache"),
           "TORCH_HOME": str(tmp_path / "torch"), "HOME": str(tmp_path), "OMP_NUM_THREADS": "1"}  # fmt: skip
    out = tmp_path / "demo"
    proc = subprocess.run([sys.executable, "-m", "scripts.demo", f"out={out}", "frames=16"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=900)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "UNTRAINED" in proc.stdout
    info = probe_video(out / "reenacted.mp4")
    assert info.frame_count == 16 and info.fps == 25.0 and info.has_audio
    assert (info.width, info.height) == (3 * 64, 64)  # driving | source | result
    assert (out / "prepared" / "manifest.jsonl").is_file() and (out / "mapper" / "mapper.json").is_file()
    # The web page says these networks are untrained (their marker files).
    assert (out / "generator" / "UNTRAINED").is_file() and (out / "mapper" / "UNTRAINED").is_file()
