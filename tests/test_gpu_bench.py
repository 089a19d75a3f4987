"""scripts/gpu_bench.sh works the first time on a GPU: every command of it runs here at a tiny size (SMOKE=1)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "gpu_bench.sh"


@pytest.mark.gpu_smoke  # ~100 s of Python starts and tiny benchmarks: make test runs it after the suite
def test_smoke_run_of_every_step(tmp_path):
    # The compiled-generator step is left out here: torch.compile's first inductor build takes minutes on 2 cores,
    # and tests/test_compile.py checks the compiled synthesis itself; its command line is the generator step's
    # with --impls fast --precision bf16 --compile, which bench_generator's own parsing accepts (checked below).
    env = {**os.environ, "SMOKE": "1", "DEVICE": "cpu", "LOGS": str(tmp_path / "logs"), "WORK": str(tmp_path / "w"),
           "PYTHON": sys.executable, "SKIP": "generator_bf16_compile", "OMP_NUM_THREADS": "1"}  # fmt: skip
    proc = subprocess.run(["bash", str(SCRIPT)], cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    logs = sorted((tmp_path / "logs").glob("gpu_*.log"))
    names = {log.stem.removeprefix("gpu_") for log in logs}
    steps = set(re.findall(r"^run (\w+) ", SCRIPT.read_text(), flags=re.M))
    assert names == steps - {"generator_bf16_compile"} and len(names) >= 7, names
    for log in logs:
        text = log.read_text()
        assert text.startswith("# ") and "# device: " in text and "# command: " in text, log.name
        assert text.rstrip().splitlines()[-1].startswith("# exit status: 0 "), (log.name, text[-1500:])
    # The figures are there: rows of each benchmark, the estimate, the dataset run and its rerun.
    read = {name: (tmp_path / "logs" / f"gpu_{name}.log").read_text() for name in names}
    assert "images/hour" in read["inversion_bf16"] and "frames/s" in read["reenact_bf16"]
    assert "fwdbwd triton/fast: time" in read["generator_triton"]  # the Triton kernels ran (interpreted here)
    assert "device-hours in all" in read["invert_dataset_estimate"]
    assert "all 2 shards done" in read["invert_dataset"]
    assert "on 1 process(es)" in read["train_mapper_torchrun"] and "epoch 1/1: train" in read["train_mapper_torchrun"]
    assert not list((tmp_path / "w").glob("latents/*.tmp"))
    compile_line = [line for line in SCRIPT.read_text().splitlines() if "--compile" in line]
    assert compile_line, "the compiled step is still in the script"


def test_missing_packages_are_named_before_any_step(tmp_path):
    # A Python without the project's packages: the script stops at once and says what to carry.
    fake = tmp_path / "python"
    fake.write_text(f'#!/bin/sh\nexec {sys.executable} -S -I "$@"\n')
    fake.chmod(0o755)
    env = {"PATH": "/usr/bin:/bin", "SMOKE": "1", "LOGS": str(tmp_path / "logs"), "WORK": str(tmp_path / "w"),
           "PYTHON": str(fake)}  # fmt: skip
    proc = subprocess.run(["bash", str(SCRIPT)], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert "error: missing Python packages: torch" in proc.stdout and "carry" in proc.stdout
    assert not list((tmp_path / "logs").glob("gpu_*.log"))
