"""The fuzz worker: a separate process that runs one case at a time under a memory cap, so that a case that hangs
or allocates without bound is killed (by the parent, ``harness.Worker``) instead of taking the test run with it.

Protocol: the parent writes pickled ``(target, payload)`` requests, length-prefixed, to stdin; the worker answers
each with a pickled ``(kind, message, seconds)`` on the file descriptor given in ``argv[1]``. Its own stdout and
stderr (FFmpeg's and Pillow's C-level chatter) go to /dev/null; what a script prints is captured in Python.
"""

from __future__ import annotations

import os
import pickle
import resource
import struct
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parents[1]), str(HERE)]

MEMORY_CAP = int(os.environ.get("FUZZ_MEMORY_CAP", 3 << 30))  # bytes of address space a case may add


def _read_exact(stream, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = stream.read(n - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data


def outcomes_run(module, payload: dict) -> tuple[str, str]:
    import tempfile

    return module.selftest(Path(tempfile.gettempdir()), payload)


def main() -> None:
    out = os.fdopen(int(sys.argv[1]), "wb", buffering=0)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    if os.environ.get("FUZZ_WORKER_BARE"):  # the harness's self-test: no torch, a start in milliseconds
        import outcomes as targets

        targets.run = lambda target, payload: outcomes_run(targets, payload)
    else:
        import torch

        torch.set_num_threads(1)
        import targets  # the project's modules, imported once

    with open("/proc/self/statm") as f:
        size = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (size + MEMORY_CAP, hard))
    out.write(b"R")  # ready
    stdin = sys.stdin.buffer
    while True:
        try:
            (n,) = struct.unpack("<Q", _read_exact(stdin, 8))
            target, payload = pickle.loads(_read_exact(stdin, n))
        except EOFError:
            return
        start = time.perf_counter()
        kind, message = targets.run(target, payload)
        answer = pickle.dumps((kind, message, time.perf_counter() - start))
        out.write(struct.pack("<Q", len(answer)) + answer)


if __name__ == "__main__":
    main()
