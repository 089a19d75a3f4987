"""A background worker for the CPU side of reenactment, so that generation never waits on it.

``Prefetcher`` runs any iterable in a thread, at most ``depth`` items ahead of its consumer (a bounded queue:
memory stays a few batches). An exception in the worker is raised in the consumer, with its message, when it
reaches the item that failed; when the consumer stops early (``close``, or leaving the ``with`` block) the worker
stops too. ``driving_batches`` is what ``reenact`` hands it: the landmark images L_d of each batch (drawn with
OpenCV) and, for ``--concat``, the decoded driving frames (PyAV); both release the GIL while they work, so they
overlap with the mapper and the generator in the main thread.
"""

from __future__ import annotations

import itertools
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Generic, TypeVar

import numpy as np

T = TypeVar("T")
_ITEM, _END, _ERROR = range(3)


class Prefetcher(Generic[T]):
    """Iterate ``source`` in a background thread, up to ``depth`` (>= 1) items ahead; use as ``with``."""

    def __init__(self, source: Iterable[T], depth: int = 2, name: str = "prefetch") -> None:
        if depth < 1:
            raise ValueError(f"prefetch depth must be at least 1, got {depth}")
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._done = False
        self._thread = threading.Thread(target=self._work, args=(source,), name=name, daemon=True)
        self._thread.start()

    def _put(self, message: tuple[int, Any]) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(message, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def _work(self, source: Iterable[T]) -> None:
        iterator = iter(source)
        try:
            for item in iterator:
                if not self._put((_ITEM, item)):
                    return  # the consumer stopped
            self._put((_END, None))
        except BaseException as err:  # handed to the consumer, raised there
            self._put((_ERROR, err))
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()  # a generator's own cleanup (open files) runs now, in this thread

    def __iter__(self) -> Prefetcher[T]:
        return self

    def __next__(self) -> T:
        if self._done:
            raise StopIteration
        kind, value = self._queue.get()
        if kind == _ITEM:
            return value
        self._done = True
        self._thread.join()
        if kind == _ERROR:
            raise value
        raise StopIteration

    def close(self) -> None:
        """Stop the worker (it finishes the item it is on) and wait for it."""
        self._done = True
        self._stop.set()
        while self._thread.is_alive():
            try:
                self._queue.get(timeout=0.05)
            except queue.Empty:
                pass
        self._thread.join()

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def __enter__(self) -> Prefetcher[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Inline(Generic[T]):
    """The same interface without a thread (``depth=0``)."""

    def __init__(self, source: Iterable[T]) -> None:
        self._iterator = iter(source)

    def __iter__(self) -> Iterator[T]:
        return self._iterator

    def __enter__(self) -> Iterator[T]:
        return self._iterator

    def __exit__(self, *exc: object) -> None:
        close = getattr(self._iterator, "close", None)
        if close is not None:
            close()


def prefetched(source: Iterable[T], depth: int) -> Prefetcher[T] | _Inline[T]:
    """``Prefetcher(source, depth)``, or for ``depth == 0`` the source iterated in the caller's thread."""
    return Prefetcher(source, depth) if depth else _Inline(source)


def driving_batches(
    points: np.ndarray,
    batch_size: int,
    render: Callable[[np.ndarray], np.ndarray],
    frames: Iterator[np.ndarray] | None = None,
) -> Iterator[tuple[int, np.ndarray, list[np.ndarray] | None]]:
    """Per batch of ``points`` ([T, 70, 2]): (first frame index, ``render(batch)`` ([n, S, S, 3] uint8 landmark
    images), the batch's next n decoded ``frames`` or None)."""
    try:
        for start in range(0, len(points), batch_size):
            batch = points[start : start + batch_size]
            decoded = list(itertools.islice(frames, len(batch))) if frames is not None else None
            yield start, render(batch), decoded
    finally:
        close = getattr(frames, "close", None)
        if close is not None:
            close()
