"""Stream video frames in and out with PyAV: HxWx3 uint8 RGB frames, the source's fps kept, its audio carried.

Nothing here holds a whole video: the reader decodes one frame at a time and the writer encodes as it goes.
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from av.video.reformatter import ColorRange

from stylegan3.io import AtomicFile

# The one list of video files the tools take as input (anything FFmpeg demuxes; these are the usual names).
VIDEO_SUFFIXES = (".mp4", ".mpg", ".mpeg", ".mov", ".avi", ".mkv", ".webm", ".m4v")
# Containers the writer produces, by suffix; both take H.264 video and AAC audio.
_OUTPUT_FORMATS = {".mp4": "mp4", ".mov": "mov"}
OUTPUT_SUFFIXES = tuple(_OUTPUT_FORMATS)
# A decoded frame stamped this much after an output instant still counts as shown at that instant:
# containers with a 1 ms time base (Matroska, WebM) round 30000/1001 fps timestamps by up to 0.5 ms.
_TIMESTAMP_TOLERANCE = Fraction(1, 1000)
# The writer muxes the audio this far behind the newest video frame, so that audio decoded ahead of what
# has been muxed never reaches past the video's end, where it is cut exactly when the writer closes.
_AUDIO_LAG_SECONDS = Fraction(1, 2)
_AAC_BIT_RATE = 128_000  # per stream: plenty for speech
_AVCOL_SPC_SMPTE170M = 6  # FFmpeg's AVColorSpace for the BT.601 matrix (PyAV exposes no enum for it)


class VideoReadError(ValueError):
    """A video that is missing, empty, not a video, truncated or damaged; the message names the file."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = Path(path)
        self.reason = " ".join(str(reason).split())  # one line, whatever FFmpeg said
        super().__init__(f"cannot read video '{self.path}': {self.reason}")


@dataclass(frozen=True)
class VideoInfo:
    """What the container declares about a video, without decoding it (see VideoReader for the estimates)."""

    fps: float  # frames per second of the video stream
    frame_count: int  # frames in the video stream (an estimate where the container has no count, e.g. MPEG-PS)
    width: int  # pixels
    height: int  # pixels
    duration: float  # seconds, frame_count / fps
    has_audio: bool
    audio_codec: str | None  # e.g. "aac", "mp2"; None without audio


def probe_video(path: str | os.PathLike) -> VideoInfo:
    """Read a video's declared properties (decodes only its first frame). Raises VideoReadError like VideoReader."""
    with VideoReader(path) as reader:
        audio = reader._container.streams.audio
        return VideoInfo(
            fps=reader.source_fps,
            frame_count=reader.source_frame_count,
            width=reader.width,
            height=reader.height,
            duration=reader.duration,
            has_audio=reader.has_audio,
            audio_codec=audio[0].codec_context.name if audio else None,
        )


class VideoReader:
    """Decode a video file frame by frame as HxWx3 uint8 RGB arrays, optionally resampled to another fps.

    Use as a context manager and iterate once::

        with VideoReader("driving.mp4", fps=25) as video:
            for frame in video:  # HxWx3 uint8 RGB
                ...

    With ``fps`` given, output frame k shows the latest source frame whose timestamp is <= k / fps (1 ms
    tolerance), so frames are repeated or dropped as needed; there are round(duration * fps) output frames,
    where duration runs from the first decoded frame to the end of the last one.

    Frames are turned upright by the container's display matrix (phones store portrait video as landscape
    plus a rotation), as read_image honours EXIF orientation; ``width`` and ``height`` are the upright size.
    The first frame is decoded on opening, so a file whose first frame cannot be decoded fails there.

    ``frame_count`` and ``duration`` come from the container before decoding. Where the container has no
    frame count (MPEG-PS ``.mpg``), the count is FFmpeg's duration estimate rounded to whole frames.

    Damage: opening a missing, empty, non-video or unreadable file (e.g. an MP4 cut before its index) raises
    VideoReadError. With ``strict`` (the default), iteration raises VideoReadError at the first frame the
    decoder flags as corrupt (an MPEG-PS file cut mid-picture) or on a decode error, naming the frame index,
    and after the last frame if more than one frame fewer decoded than the container declared ("truncated:
    decoded N of M frames"). Frames already yielded stay yielded. With ``strict=False`` corrupt frames are
    yielded as FFmpeg concealed them and a short count is accepted; decode errors still raise. An MPEG-PS
    file cut exactly between pictures is indistinguishable from a shorter clip (FFmpeg takes its duration from
    the last timestamps), so it reads without error.
    """

    def __init__(
        self,
        path: str | os.PathLike,  # any container/codec FFmpeg decodes
        fps: float | None = None,  # output frame rate; None keeps every source frame
        strict: bool = True,  # raise on corrupt frames and on truncation (see class docstring)
    ):
        self.path = Path(path)
        self.strict = strict
        if fps is not None and not fps > 0:
            raise ValueError(f"fps must be positive, got {fps}")
        self._container = _open_input(self.path)
        try:
            if not self._container.streams.video:
                raise VideoReadError(self.path, "no video stream")
            self._stream = self._container.streams.video[0]
            self._stream.thread_type = "AUTO"
            rate = self._stream.average_rate or self._stream.guessed_rate or self._stream.base_rate
            if not rate or rate <= 0:
                raise VideoReadError(self.path, "the video stream declares no frame rate")
        except BaseException:
            self._container.close()
            raise
        self._source_rate = Fraction(rate)
        self._output_rate = _as_rate(fps) if fps is not None else None
        self._source_frame_count = _declared_frame_count(self._container, self._stream, self._source_rate)
        self._frames: Iterator[np.ndarray] | None = None
        # Decode the first frame now: it tells the upright size, and an undecodable file fails here.
        self._timed_frames = self._decode_timed()
        try:
            self._first = next(self._timed_frames, None)
            if self._first is None:
                raise VideoReadError(self.path, "the video stream holds no decodable frame")
        except BaseException:
            self.close()
            raise
        first = self._first[1]
        self._size = (first.height, first.width) if _quarter_turns(first) % 2 else (first.width, first.height)

    @property
    def source_fps(self) -> float:
        """Frame rate of the video stream (its average rate)."""
        return float(self._source_rate)

    @property
    def fps(self) -> float:
        """Frame rate of the frames this reader yields: the ``fps`` asked for, else the source's."""
        return float(self._output_rate or self._source_rate)

    @property
    def source_frame_count(self) -> int:
        """Frames in the video stream as declared by the container (an estimate for MPEG-PS); 0 if unknown."""
        return self._source_frame_count

    @property
    def frame_count(self) -> int:
        """Frames this reader is expected to yield (from the declared count; 0 if unknown)."""
        if self._output_rate is None:
            return self._source_frame_count
        return _round_half_up(Fraction(self._source_frame_count) / self._source_rate * self._output_rate)

    @property
    def duration(self) -> float:
        """Declared length of the video in seconds: source_frame_count / source_fps."""
        return float(self._source_frame_count / self._source_rate)

    @property
    def width(self) -> int:
        """Width of the yielded (upright) frames."""
        return self._size[0]

    @property
    def height(self) -> int:
        """Height of the yielded (upright) frames."""
        return self._size[1]

    @property
    def has_audio(self) -> bool:
        return bool(self._container.streams.audio)

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        """Release the file; safe to call twice."""
        if self._frames is not None:
            self._frames.close()
        self._timed_frames.close()
        self._container.close()

    def __iter__(self) -> VideoReader:
        return self

    def __next__(self) -> np.ndarray:
        """The next frame, HxWx3 uint8 RGB."""
        if self._frames is None:
            timed_frames = itertools.chain([self._first], self._timed_frames)
            self._first = None
            self._frames = self._resample(timed_frames) if self._output_rate else self._all(timed_frames)
        return next(self._frames)

    @staticmethod
    def _all(timed_frames: Iterator[tuple[Fraction, av.VideoFrame]]) -> Iterator[np.ndarray]:
        for _, frame in timed_frames:
            yield _to_rgb(frame)

    def _resample(self, timed_frames: Iterator[tuple[Fraction, av.VideoFrame]]) -> Iterator[np.ndarray]:
        """Show, at each output instant k / fps, the latest source frame stamped at or before it."""
        shown, index, last_time = None, 0, Fraction(0)
        for time, frame in timed_frames:
            # Frame `shown` covers every output instant before `time` (within the tolerance).
            while shown is not None and index / self._output_rate + _TIMESTAMP_TOLERANCE < time:
                yield _to_rgb(shown)
                index += 1
            shown, last_time = frame, time
        if shown is None:
            return
        end = last_time + 1 / self._source_rate
        for _ in range(index, _round_half_up(end * self._output_rate)):
            yield _to_rgb(shown)

    def _decode_timed(self) -> Iterator[tuple[Fraction, av.VideoFrame]]:
        """Decoded frames with their time in seconds from the first frame; enforces the strict checks."""
        time_base = Fraction(self._stream.time_base)
        origin, index = None, 0
        try:
            for frame in self._container.decode(self._stream):
                if frame.is_corrupt and self.strict:
                    raise VideoReadError(self.path, f"frame {index} is corrupt (damaged or truncated data)")
                if frame.pts is None:
                    time = index / self._source_rate
                else:
                    origin = frame.pts if origin is None else origin
                    time = (frame.pts - origin) * time_base
                yield time, frame
                index += 1
        except av.FFmpegError as error:
            raise VideoReadError(self.path, f"decode error at frame {index}: {_ffmpeg_reason(error)}") from error
        declared = self._source_frame_count
        if self.strict and declared and index < declared - 1:
            raise VideoReadError(self.path, f"truncated: decoded {index} of {declared} frames")


class VideoWriter:
    """Encode HxWx3 uint8 RGB frames as H.264 (libx264) in .mp4/.mov, optionally with the audio of another file.

    The frame size is taken from the first frame. With a chroma-subsampled ``pix_fmt`` such as yuv420p the
    width and height must be even: odd sizes raise ValueError rather than being padded or cropped silently.
    ``audio_from``'s first audio stream, if it has one, is muxed alongside the video: copied if it is AAC,
    otherwise re-encoded to AAC; it is aligned to that file's first video timestamp and cut at the end of
    the written video (a copied track may overrun it by less than one audio frame, about 23 ms).
    Frames go to a hidden temporary file next to ``path`` that is renamed to ``path`` on a clean close and
    deleted on an exception, so ``path`` never holds a half-written video. RGB becomes BT.601 limited-range
    YUV, tagged as such, which is also what VideoReader assumes for untagged video.
    """

    def __init__(
        self,
        path: str | os.PathLike,  # .mp4 or .mov; parent folders are created
        fps: float,  # e.g. 25 or 30000/1001 (a float close to a fraction with denominator <= 1001 snaps to it)
        audio_from: str | os.PathLike | None = None,  # file whose audio is carried over, usually the driving clip
        crf: int = 18,  # x264 constant rate factor: 0 lossless, 18 visually near-lossless, 23 x264's default
        preset: str = "medium",  # x264 speed/size trade-off, "ultrafast" .. "veryslow"
        pix_fmt: str = "yuv420p",  # yuv420p plays everywhere; yuv444p keeps full colour resolution
    ):
        self.path = Path(path)
        self._format = _OUTPUT_FORMATS.get(self.path.suffix.lower())
        if self._format is None:
            raise ValueError(f"{self.path}: unsupported video suffix {self.path.suffix!r}; use .mp4 or .mov")
        if not fps > 0:
            raise ValueError(f"fps must be positive, got {fps}")
        self._rate = _as_rate(fps)
        self.audio_from = Path(audio_from) if audio_from is not None else None
        if self.audio_from is not None:
            _open_input(self.audio_from).close()  # fail now, not at the first frame, if it cannot be read
        self._pix_fmt = av.VideoFormat(pix_fmt)  # raises ValueError for an unknown format
        self._options = {"crf": str(crf), "preset": preset}
        self._file: AtomicFile | None = None  # created with the container, once the frame size is known
        self._container: av.container.OutputContainer | None = None
        self._video = None
        self._audio: _AudioTrack | None = None
        self._frame_count = 0
        self._closed = False

    @property
    def fps(self) -> float:
        return float(self._rate)

    @property
    def frame_count(self) -> int:
        """Frames written so far."""
        return self._frame_count

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type, exc_value, traceback) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def write(self, frame: np.ndarray) -> None:
        """Append one HxWx3 uint8 RGB frame; all frames must have the first frame's size."""
        if self._closed:
            raise ValueError(f"{self.path}: write() after close()")
        frame = np.asarray(frame)
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise ValueError(f"{self.path}: expected an HxWx3 uint8 RGB frame, got shape {frame.shape} {frame.dtype}")
        if self._container is None:
            self._open(height=frame.shape[0], width=frame.shape[1])
        elif frame.shape[:2] != (self._video.height, self._video.width):
            raise ValueError(
                f"{self.path}: frame {self._frame_count} is {frame.shape[1]}x{frame.shape[0]}, "
                f"the video is {self._video.width}x{self._video.height}"
            )
        video_frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
        video_frame = video_frame.reformat(format=self._pix_fmt.name, dst_colorspace="ITU601", dst_color_range="MPEG")
        video_frame.pts = self._frame_count
        video_frame.time_base = 1 / self._rate
        self._container.mux(self._video.encode(video_frame))
        self._frame_count += 1
        if self._audio is not None:
            self._audio.mux_until(self._frame_count / self._rate - _AUDIO_LAG_SECONDS)

    def close(self) -> None:
        """Flush the encoders, finish the audio, and move the file to ``path``. Raises if no frame was written."""
        if self._closed:
            return
        if self._container is None:
            self._closed = True
            raise ValueError(f"{self.path}: no frames were written")
        try:
            self._container.mux(self._video.encode(None))
            if self._audio is not None:
                self._audio.finish(Fraction(self._frame_count) / self._rate)
            self._container.close()
            self._closed = True
            self._file.commit()
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        """Stop without producing ``path``: close everything and delete the temporary file."""
        self._closed = True
        for closable in (self._audio, self._container):
            if closable is not None:
                try:
                    closable.close()
                except (av.FFmpegError, OSError):
                    pass  # already failing; the temporary file goes anyway
        if self._file is not None:
            self._file.abort()

    def _open(self, height: int, width: int) -> None:
        """Create the temporary file and its streams once the frame size is known."""
        subsampled_x, subsampled_y = self._pix_fmt.chroma_width(2) < 2, self._pix_fmt.chroma_height(2) < 2
        if (subsampled_x and width % 2) or (subsampled_y and height % 2):
            raise ValueError(
                f"{self.path}: {self._pix_fmt.name} needs an even width and height, got {width}x{height}; "
                "crop or pad the frames"
            )
        self._file = AtomicFile(self.path)
        container = av.open(
            str(self._file.tmp), mode="w", format=self._format, container_options={"movflags": "+faststart"}
        )
        try:
            video = container.add_stream("libx264", rate=self._rate, options=self._options)
            video.width, video.height, video.pix_fmt = width, height, self._pix_fmt.name
            video.time_base = 1 / self._rate
            video.codec_context.colorspace = _AVCOL_SPC_SMPTE170M
            video.codec_context.color_range = ColorRange.MPEG
            if self.audio_from is not None:
                self._audio = _AudioTrack.create(self.audio_from, container)
            container.start_encoding()  # writes the header, opening the encoders (the AAC frame size is set)
        except BaseException:
            container.close()
            self._file.abort()
            raise
        self._container, self._video = container, video


class _AudioTrack:
    """The audio of a source file fed into an output container: packets copied (AAC) or re-encoded to AAC."""

    def __init__(self, source: Path, container: av.container.InputContainer, output: av.container.OutputContainer):
        self.source = source
        self._input = container
        self._output = output
        in_stream = container.streams.audio[0]
        # Align to the source's video: its first video timestamp is the output's time 0.
        videos = container.streams.video
        origin = videos[0].start_time if videos and videos[0].start_time is not None else None
        origin_seconds = Fraction(origin) * videos[0].time_base if origin is not None else Fraction(0)
        self._limit: Fraction | None = None  # end of the output video in seconds, once known
        if in_stream.codec_context.name == "aac":
            self.stream = output.add_stream_from_template(in_stream)
            self._packets = self._copied(in_stream, origin_seconds)
        else:
            channels = min(in_stream.codec_context.layout.nb_channels, 2)
            self.stream = output.add_stream("aac", rate=in_stream.codec_context.sample_rate)
            self.stream.codec_context.layout = "stereo" if channels == 2 else "mono"
            self.stream.codec_context.bit_rate = _AAC_BIT_RATE
            self._packets = self._reencoded(in_stream, origin_seconds)
        self._pending: av.Packet | None = None

    @classmethod
    def create(cls, source: Path, output: av.container.OutputContainer) -> _AudioTrack | None:
        """The track for ``source``'s first audio stream, or None if it has none."""
        container = _open_input(source)
        if not container.streams.audio:
            container.close()
            return None
        try:
            return cls(source, container, output)
        except BaseException:
            container.close()
            raise

    def mux_until(self, seconds: Fraction) -> None:
        """Mux the packets that start before ``seconds``."""
        while True:
            if self._pending is None:
                self._pending = next(self._packets, None)
                if self._pending is None:
                    return
            packet = self._pending
            if (packet.pts if packet.pts is not None else packet.dts) * packet.time_base >= seconds:
                return
            self._output.mux(packet)
            self._pending = None

    def finish(self, video_duration: Fraction) -> None:
        """Mux the rest of the audio up to the end of the video, then release the source."""
        self._limit = video_duration
        self.mux_until(video_duration)
        self.close()

    def close(self) -> None:
        self._packets.close()
        self._input.close()

    def _copied(self, in_stream, origin_seconds: Fraction) -> Iterator[av.Packet]:
        shift = round(origin_seconds / in_stream.time_base)
        try:
            for packet in self._input.demux(in_stream):
                if packet.size == 0:  # the demuxer's end-of-stream marker
                    continue
                if packet.pts is not None:
                    packet.pts -= shift
                if packet.dts is not None:
                    packet.dts -= shift
                packet.stream = self.stream
                yield packet
        except av.FFmpegError as error:
            raise VideoReadError(self.source, f"audio demux error: {_ffmpeg_reason(error)}") from error

    def _reencoded(self, in_stream, origin_seconds: Fraction) -> Iterator[av.Packet]:
        try:
            for frame in self._resampled(in_stream, origin_seconds):
                yield from self.stream.encode(frame)
            yield from self.stream.encode(None)
        except av.FFmpegError as error:
            raise VideoReadError(self.source, f"audio re-encoding failed: {_ffmpeg_reason(error)}") from error

    def _resampled(self, in_stream, origin_seconds: Fraction) -> Iterator[av.AudioFrame]:
        """Decoded audio in the AAC encoder's format and frame size, stamped in samples and cut at the end."""
        context = self.stream.codec_context
        rate = context.sample_rate
        resampler = av.AudioResampler(
            format=context.format, layout=context.layout, rate=rate, frame_size=context.frame_size or 1024
        )
        position = None  # output samples from the output's time 0 to the next frame's start
        for decoded in itertools.chain(self._input.decode(in_stream), [None]):  # None flushes the resampler
            if position is None:
                start = Fraction(0)
                if decoded is not None and decoded.pts is not None:
                    start = Fraction(decoded.pts) * in_stream.time_base
                position = round((start - origin_seconds) * rate)
            for frame in resampler.resample(decoded):
                frame, position = self._cut(frame, position, rate)
                if frame is None:
                    return
                yield frame

    def _cut(self, frame: av.AudioFrame, position: int, rate: int) -> tuple[av.AudioFrame | None, int]:
        """Stamp ``frame`` at ``position`` samples and shorten it to end at the video's end, once that is known."""
        samples = frame.samples
        if self._limit is not None:
            room = round(self._limit * rate) - position
            if room <= 0:
                return None, position
            if room < samples:
                planes = frame.to_ndarray()[:, :room]
                cut = av.AudioFrame.from_ndarray(
                    np.ascontiguousarray(planes), format=frame.format.name, layout=frame.layout
                )
                cut.sample_rate = rate
                frame, samples = cut, room
        frame.pts = position
        frame.time_base = Fraction(1, rate)
        return frame, position + samples


def _open_input(path: Path) -> av.container.InputContainer:
    if not path.exists():
        raise VideoReadError(path, "no such file")
    if not path.is_file():
        raise VideoReadError(path, "not a regular file")
    if path.stat().st_size == 0:
        raise VideoReadError(path, "file is empty (0 bytes)")
    try:
        return av.open(str(path), mode="r", metadata_errors="replace")  # a title that is not UTF-8: still a video
    except (av.FFmpegError, OSError) as error:
        reason = _ffmpeg_reason(error)
        raise VideoReadError(path, f"cannot open as a video ({reason}); not a video file, or truncated") from error


def _ffmpeg_reason(error: Exception) -> str:
    """FFmpeg's message without the file name PyAV appends."""
    return getattr(error, "strerror", None) or str(error) or type(error).__name__


def _declared_frame_count(container, stream, rate: Fraction) -> int:
    """Frames declared by the container, else its duration (stream's, then container's) in whole frames."""
    if stream.frames:
        return stream.frames
    if stream.duration is not None and stream.time_base is not None:
        seconds = Fraction(stream.duration) * stream.time_base
    elif container.duration is not None:
        seconds = Fraction(container.duration, av.time_base)
    else:
        return 0
    return _round_half_up(seconds * rate)


def _as_rate(fps: float) -> Fraction:
    """fps as an exact fraction: 25.0 -> 25, 29.97002997 -> 30000/1001."""
    return Fraction(fps).limit_denominator(1001)


def _round_half_up(value: Fraction) -> int:
    return math.floor(value + Fraction(1, 2))


def _quarter_turns(frame: av.VideoFrame) -> int:
    """Counter-clockwise quarter turns (0..3) that make the frame upright, from its display matrix."""
    return round(frame.rotation / 90) % 4


def _to_rgb(frame: av.VideoFrame) -> np.ndarray:
    """The frame upright as HxWx3 uint8 RGB."""
    rgb = frame.to_ndarray(format="rgb24")
    turns = _quarter_turns(frame)
    return np.ascontiguousarray(np.rot90(rgb, turns)) if turns else rgb
