"""VideoReader / VideoWriter / probe_video on the GRID samples in ../shared/samples (never copied here)."""

from __future__ import annotations

import gc
import weakref
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from reenactment.media.video import VideoReader, VideoReadError, VideoWriter, probe_video

SAMPLES = Path(__file__).resolve().parents[1].parent / "shared" / "samples"
GRID_MPG = SAMPLES / "videos" / "grid_lbax4n.mpg"  # MPEG-1 + MP2, 360x288, 25 fps, 75 frames, index-less
GRID_MP4 = SAMPLES / "videos" / "grid_lbax4n.mp4"  # H.264 + AAC, moov atom at the end
AAC_FRAME_SECONDS = 1024 / 44100


def read_all(path: Path, **kwargs) -> list[np.ndarray]:
    with VideoReader(path, **kwargs) as reader:
        return list(reader)


def stream_seconds(path: Path) -> dict[str, float]:
    """Container and per-stream durations in seconds, as FFmpeg reports them."""
    with av.open(str(path)) as container:
        seconds = {"container": container.duration / av.time_base}
        for stream in container.streams:
            seconds[stream.type] = float(stream.duration * stream.time_base)
        return seconds


def write_clip(path: Path, frames: list[np.ndarray], **kwargs) -> None:
    with VideoWriter(path, 25, **kwargs) as writer:
        for frame in frames:
            writer.write(frame)


@pytest.fixture(scope="module")
def grid_frames() -> list[np.ndarray]:
    return read_all(GRID_MPG)


def test_probe_grid_mpg():
    info = probe_video(GRID_MPG)
    assert (info.fps, info.frame_count, info.width, info.height) == (25.0, 75, 360, 288)
    assert info.duration == pytest.approx(3.0)
    assert info.has_audio and info.audio_codec == "mp2"


@pytest.mark.parametrize("source", [GRID_MPG, GRID_MP4], ids=["mpg-reencode-audio", "mp4-copy-audio"])
def test_roundtrip_keeps_frames_fps_and_audio(source, tmp_path):
    frames = read_all(source)
    assert len(frames) == 75 and frames[0].shape == (288, 360, 3) and frames[0].dtype == np.uint8
    output = tmp_path / "out.mp4"
    write_clip(output, frames, audio_from=source)

    info = probe_video(output)
    assert (info.frame_count, info.fps, info.has_audio, info.audio_codec) == (75, 25.0, True, "aac")
    written, original = stream_seconds(output), stream_seconds(source)
    assert abs(written["container"] - original["container"]) < 0.05
    assert abs(written["video"] - original["video"]) < 0.05
    assert written["audio"] <= written["video"] + AAC_FRAME_SECONDS
    back = read_all(output)
    assert len(back) == 75
    assert np.mean([np.abs(a.astype(np.int16) - b).mean() for a, b in zip(frames, back)]) < 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4"]  # no temporary file left


def test_aac_audio_is_copied_not_reencoded(tmp_path):
    output = tmp_path / "out.mp4"
    write_clip(output, read_all(GRID_MP4)[:10], audio_from=GRID_MP4)
    with av.open(str(GRID_MP4)) as source, av.open(str(output)) as written:
        source_packets = [bytes(p) for p in source.demux(audio=0) if p.size][:5]
        written_packets = [bytes(p) for p in written.demux(audio=0) if p.size][:5]
    assert written_packets == source_packets


@pytest.mark.parametrize("source", [GRID_MPG, GRID_MP4], ids=["mpg", "mp4"])
def test_audio_is_cut_at_the_end_of_a_shorter_video(source, tmp_path):
    output = tmp_path / "short.mp4"
    write_clip(output, read_all(source)[:30], audio_from=source)  # 1.2 s of a 3 s clip
    seconds = stream_seconds(output)
    assert seconds["video"] == pytest.approx(1.2)
    assert 1.2 - AAC_FRAME_SECONDS <= seconds["audio"] <= 1.2 + AAC_FRAME_SECONDS


def test_audio_from_a_silent_file_adds_no_audio(grid_frames, tmp_path):
    silent = tmp_path / "silent.mp4"
    write_clip(silent, grid_frames[:5])
    output = tmp_path / "out.mp4"
    write_clip(output, grid_frames[:5], audio_from=silent)
    assert not probe_video(output).has_audio


@pytest.mark.parametrize(
    ("fps", "expected_count", "source_index"),
    [(12.5, 38, lambda k: 2 * k), (50, 150, lambda k: k // 2)],
    ids=["12.5fps-drops", "50fps-repeats"],
)
def test_reader_resamples_by_timestamps(grid_frames, fps, expected_count, source_index):
    with VideoReader(GRID_MPG, fps=fps) as reader:
        assert (reader.fps, reader.source_fps, reader.frame_count) == (fps, 25.0, expected_count)
        resampled = list(reader)
    assert len(resampled) == expected_count
    for k, frame in enumerate(resampled):
        assert np.array_equal(frame, grid_frames[source_index(k)]), k


def test_writer_keeps_ntsc_rate(grid_frames, tmp_path):
    output = tmp_path / "ntsc.mp4"
    with VideoWriter(output, 30000 / 1001) as writer:
        for frame in grid_frames[:6]:
            writer.write(frame)
    with av.open(str(output)) as container:
        assert container.streams.video[0].average_rate == Fraction(30000, 1001)


@pytest.mark.parametrize("case", ["empty", "missing", "text", "mp4-cut-before-index"])
def test_unreadable_videos_raise_with_file_name(case, tmp_path):
    path = tmp_path / f"{case}.mp4"
    if case == "empty":
        path.write_bytes(b"")
    elif case == "text":
        path.write_text("this is a text file, not a video\n")
    elif case == "mp4-cut-before-index":  # moov is at the end, so half the file has no index
        data = GRID_MP4.read_bytes()
        assert data.find(b"moov") > len(data) // 2
        path.write_bytes(data[: len(data) // 2])
    with pytest.raises(VideoReadError, match=path.name):
        VideoReader(path)
    with pytest.raises(VideoReadError, match=path.name):
        probe_video(path)


def read_until_error(path: Path, **kwargs) -> tuple[list[np.ndarray], VideoReadError | None]:
    frames = []
    try:
        with VideoReader(path, **kwargs) as reader:
            for frame in reader:
                frames.append(frame)
    except VideoReadError as error:
        return frames, error
    return frames, None


def test_truncated_mpg_stops_at_the_damaged_frame(tmp_path):
    # MPEG-PS has no index: FFmpeg estimates the duration from the last timestamps, so the cut clip looks
    # complete, but the picture cut in half is flagged corrupt.
    path = tmp_path / "half.mpg"
    data = GRID_MPG.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    frames, error = read_until_error(path)
    assert error is not None and "half.mpg" in str(error) and "corrupt" in str(error)
    assert f"frame {len(frames)}" in str(error) and 30 < len(frames) < 40
    lenient, error = read_until_error(path, strict=False)
    assert error is None and len(lenient) == len(frames) + 1  # the concealed, damaged picture too


def test_truncated_indexed_mp4_reports_the_missing_frames(grid_frames, tmp_path):
    complete = tmp_path / "complete.mp4"
    write_clip(complete, grid_frames)  # the writer puts the index (moov) first
    data = complete.read_bytes()
    assert data.find(b"moov") < data.find(b"mdat")
    path = tmp_path / "half.mp4"
    path.write_bytes(data[: len(data) // 2])
    frames, error = read_until_error(path)
    assert error is not None and "half.mp4" in str(error)
    assert f"truncated: decoded {len(frames)} of 75 frames" in str(error) and 10 < len(frames) < 70
    lenient, error = read_until_error(path, strict=False)
    assert error is None and len(lenient) == len(frames)


def test_writer_rejects_odd_size_and_leaves_nothing(tmp_path):
    output = tmp_path / "odd.mp4"
    with pytest.raises(ValueError, match="even"):
        with VideoWriter(output, 25) as writer:
            writer.write(np.zeros((33, 32, 3), np.uint8))
    assert list(tmp_path.iterdir()) == []


def test_writer_interrupted_leaves_no_file(grid_frames, tmp_path):
    output = tmp_path / "sub" / "out.mp4"
    with pytest.raises(KeyboardInterrupt):
        with VideoWriter(output, 25, audio_from=GRID_MPG) as writer:
            for frame in grid_frames[:20]:
                writer.write(frame)
            assert len(list(output.parent.iterdir())) == 1  # the hidden temporary file
            raise KeyboardInterrupt
    assert list(output.parent.iterdir()) == []


def test_rotated_video_is_read_upright(tmp_path):
    # A phone stores a portrait clip as landscape frames plus a display matrix that turns them.
    landscape = np.zeros((32, 48, 3), np.uint8)
    landscape[:8, :16] = (255, 0, 0)  # red block at the top left
    path = tmp_path / "portrait.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25, options={"crf": "0"})
        stream.width, stream.height, stream.pix_fmt = 48, 32, "yuv444p"
        stream.set_display_rotation(-90)  # counter-clockwise degrees: -90 means show it turned clockwise
        for _ in range(3):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(landscape, format="rgb24")))
        container.mux(stream.encode(None))
    with VideoReader(path) as reader:
        assert (reader.width, reader.height) == (32, 48)
        frames = list(reader)
    upright = np.rot90(landscape, -1)  # clockwise: the red block ends up at the top right
    assert frames[0].shape == (48, 32, 3)
    assert np.abs(frames[0].astype(np.int16) - upright).mean() < 4


def test_reader_streams_without_holding_frames():
    # PyAV allocates frame memory outside Python (tracemalloc cannot see it), so check that no yielded frame
    # outlives the caller's reference instead.
    alive = []
    with VideoReader(GRID_MPG, fps=50) as reader:  # resampling repeats frames: still nothing kept
        for frame in reader:
            alive.append(weakref.ref(frame))
            del frame
            gc.collect(0)
            assert sum(ref() is not None for ref in alive) == 0
    assert len(alive) == 150
