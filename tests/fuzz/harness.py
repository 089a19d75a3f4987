"""The fuzz suite's runner: Hypothesis draws the inputs here, a worker process (``worker.py``) runs each case
under a memory cap and this process kills it when a case runs past its time cap.

Two modes, chosen by ``REENACT_FUZZ``: ``quick`` (the default; part of ``make test``: a fixed, derandomized set of
examples per target, well under 30 s) and ``long`` (``make fuzz``: random examples, many more per target,
minutes). The allowed outcomes of every case are ``loaded`` and ``refused`` (see ``targets.py``).
"""

from __future__ import annotations

import collections
import json
import os
import pickle
import select
import struct
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from hypothesis import HealthCheck, settings

HERE = Path(__file__).resolve().parent
MODE = os.environ.get("REENACT_FUZZ", "quick")
CASE_SECONDS = float(os.environ.get("FUZZ_CASE_SECONDS", 20))  # a case running longer is a hang (a failure)
START_SECONDS = 120.0  # the worker's start: importing torch, av and the project on a busy machine
ALLOWED = ("loaded", "refused")

_common = {
    "deadline": None,  # the worker's time cap is the deadline; Hypothesis's would count the parent's waiting
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    "database": None,  # nothing written into the repository
    "print_blob": True,  # a failure prints how to reproduce it
}
settings.register_profile("quick", max_examples=4, derandomize=True, **_common)
settings.register_profile("long", max_examples=int(os.environ.get("FUZZ_EXAMPLES", 150)), **_common)
settings.load_profile(MODE)


def examples(quick: int) -> settings:
    """Examples of one target: ``quick`` in quick mode, the long profile's count (``FUZZ_EXAMPLES``) otherwise."""
    return settings(max_examples=quick) if MODE == "quick" else settings()


@dataclass
class Outcome:
    kind: str  # loaded, refused, bad-message, crash, timeout, died
    message: str
    seconds: float


TALLY: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
SLOWEST: dict[str, float] = collections.defaultdict(float)


class Worker:
    """One worker process, restarted after a case that killed it or ran past ``CASE_SECONDS``."""

    def __init__(self, bare: bool = False) -> None:
        self.proc: subprocess.Popen | None = None
        self.bare = bare  # a worker without the project (the harness's self-test)

    def _start(self) -> None:
        read_fd, write_fd = os.pipe()
        env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1")
        if self.bare:
            env["FUZZ_WORKER_BARE"] = "1"
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "worker.py"), str(write_fd)],
            stdin=subprocess.PIPE,
            pass_fds=(write_fd,),
            env=env,
            cwd=HERE.parents[1],
        )
        os.close(write_fd)
        self.answers = read_fd
        if self._read(1, START_SECONDS) != b"R":
            self.close()
            raise RuntimeError("the fuzz worker did not start")

    def _read(self, n: int, timeout: float) -> bytes | None:
        data = b""
        self.eof = False
        end = time.monotonic() + timeout
        while len(data) < n:
            left = end - time.monotonic()
            if left <= 0 or not select.select([self.answers], [], [], left)[0]:
                return None
            chunk = os.read(self.answers, n - len(data))
            if not chunk:
                self.eof = True
                return None
            data += chunk
        return data

    def run(self, target: str, payload: dict, label: str, timeout: float = CASE_SECONDS) -> Outcome:
        if self.proc is None or self.proc.poll() is not None:
            self._start()
        request = pickle.dumps((target, payload))
        start = time.monotonic()
        try:
            self.proc.stdin.write(struct.pack("<Q", len(request)) + request)
            self.proc.stdin.flush()
        except BrokenPipeError:
            outcome = Outcome("died", f"the worker died (status {self.proc.wait()})", 0.0)
            self.close()
            return self._count(label, outcome)
        head = self._read(8, timeout)
        body = self._read(struct.unpack("<Q", head)[0], timeout) if head else None
        if body is None:
            try:  # an end of file: the worker died; else it is still working on the case
                status = self.proc.wait(timeout=5.0) if self.eof else None
            except subprocess.TimeoutExpired:
                status = None
            alive = status is None
            self.close()
            if alive:
                outcome = Outcome("timeout", f"no answer within {timeout:g} s (a hang)", timeout)
            else:
                outcome = Outcome("died", f"the worker died (status {status}: out of memory or a crash in C)", 0.0)
            return self._count(label, outcome)
        kind, message, seconds = pickle.loads(body)
        return self._count(label, Outcome(kind, message, time.monotonic() - start))

    @staticmethod
    def _count(label: str, outcome: Outcome) -> Outcome:
        TALLY[label][outcome.kind] += 1
        SLOWEST[label] = max(SLOWEST[label], outcome.seconds)
        return outcome

    def close(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait()
            self.proc.stdin.close()
            os.close(self.answers)
            self.proc = None


def check(outcome: Outcome, case: str) -> None:
    """The property of every case: loaded, or refused in one line naming the file (or key)."""
    assert outcome.kind in ALLOWED, f"{case}: {outcome.kind}: {outcome.message}"


def report() -> str:
    """The tally of this run (cases per target and their outcomes), one line per target."""
    lines = []
    for label in sorted(TALLY):
        counts = TALLY[label]
        parts = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
        lines.append(f"{label}: {sum(counts.values())} cases ({parts}; slowest {SLOWEST[label]:.2f} s)")
    return "\n".join(lines)


def write_report(path: str | os.PathLike, seconds: float) -> None:
    data = {
        "mode": MODE,
        "seconds": round(seconds, 1),
        "targets": {k: dict(v) for k, v in TALLY.items()},
        "slowest_case_seconds": {k: round(v, 2) for k, v in SLOWEST.items()},
    }
    Path(path).write_text(json.dumps(data, indent=1) + "\n")
