"""The reenactment's background worker (reenactment.prefetch): same frames, errors reach the caller, it stops."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch
from conftest import detector, grid_frames, load_fixture

import reenactment.pipeline as pipeline
from reenactment.media.video import VideoWriter
from reenactment.model.mapper import MappingNetwork
from reenactment.pipeline import DrivingOptions, Reenactor, Source, reenact, track_driving
from reenactment.prefetch import Prefetcher, prefetched


def test_prefetcher_yields_everything_in_order_and_runs_ahead_by_at_most_depth():
    produced = []

    def source():
        for i in range(20):
            produced.append(i)
            yield i

    with Prefetcher(source(), depth=3) as items:
        first = next(items)
        time.sleep(0.3)  # time for the worker to run ahead: the queue holds 3, the worker waits with a 4th
        assert first == 0 and len(produced) <= 1 + 3 + 1
        rest = list(items)
    assert [first, *rest] == list(range(20))


def test_an_error_in_the_worker_reaches_the_caller_with_its_message():
    def source():
        yield 0
        yield 1
        raise ValueError("frame 2 of clip.mp4 could not be decoded")

    got = []
    with pytest.raises(ValueError, match="frame 2 of clip.mp4 could not be decoded"):
        with Prefetcher(source(), depth=2) as items:
            for item in items:
                got.append(item)
    assert got == [0, 1]  # everything before the failure arrived


def test_the_worker_stops_when_the_consumer_stops_early():
    produced, cleaned = [], threading.Event()

    def endless():
        try:
            i = 0
            while True:
                produced.append(i)
                yield i
                i += 1
        finally:
            cleaned.set()  # a generator's cleanup (its open video) runs

    items = Prefetcher(endless(), depth=2)
    assert [next(items), next(items)] == [0, 1]
    items.close()
    assert not items.running and cleaned.is_set()
    count = len(produced)
    time.sleep(0.1)
    assert len(produced) == count <= 2 + 2 + 1


def test_depth_zero_runs_in_the_callers_thread():
    with prefetched(iter(range(3)), 0) as items:
        assert list(items) == [0, 1, 2]
    with pytest.raises(ValueError, match="at least 1"):
        Prefetcher(iter(()), depth=-1)


class _Recorder:
    """Stands in for VideoWriter: keeps the frames written, uncompressed."""

    frames: list[np.ndarray] = []

    def __init__(self, path, fps, audio_from=None) -> None:
        type(self).frames = []

    def __enter__(self) -> _Recorder:
        return self

    def __exit__(self, *exc) -> None:
        pass

    def write(self, frame: np.ndarray) -> None:
        type(self).frames.append(frame.copy())


def test_reenacted_frames_are_bit_equal_with_and_without_prefetch(tmp_path, monkeypatch):
    clip = tmp_path / "clip.mp4"
    with VideoWriter(clip, 25.0) as writer:
        for frame in grid_frames("grid_lbax4n")[:10]:
            writer.write(frame)
    G = load_fixture("sg2_64").eval()
    torch.manual_seed(0)
    mapper = MappingNetwork(image_size=128, num_ws=10, w_dim=64, channels=(8, 8, 16, 16, 32, 32, 32, 32))
    track = track_driving(clip, detector("dlib"), G.img_resolution, DrivingOptions())
    aligned = np.zeros((64, 64, 3), np.uint8)
    source = Source(G.mean_w() + 0.05, aligned, track.points[0] + 1.5, cached=False)
    reenactor = Reenactor(G, mapper, source, torch.device("cpu"))
    monkeypatch.setattr(pipeline, "VideoWriter", _Recorder)
    outputs = {}
    for depth in (0, 2):
        info = reenact(reenactor, clip, tmp_path / "out.mp4", detector("dlib"), batch_size=3, concat=True,
                       prefetch=depth)  # fmt: skip
        assert info.frames == 10
        outputs[depth] = np.stack(_Recorder.frames)
    assert outputs[0].shape == (10, 64, 3 * 64, 3)
    assert np.array_equal(outputs[0], outputs[2])
    assert not np.array_equal(outputs[0][0, :, 128:], outputs[0][9, :, 128:])  # the result moves with the clip
