"""reenact.py end to end with tiny networks: a London face driven by a GRID clip, with its sound."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import FIXTURES, SAMPLES, ScriptRun, grid_frames, run_script

from reenactment.media.video import VideoReader, VideoWriter, probe_video
from reenactment.model.mapper import MappingNetwork, save_mapper

SOURCE = SAMPLES / "images" / "london_003_neutral.jpg"
DRIVING = SAMPLES / "videos" / "grid_lbax4n.mpg"


@pytest.fixture(scope="module")
def mapper_dir(tmp_path_factory) -> Path:
    """An untrained tiny mapper for the sg2_64 fixture generator (10 x 64 latents)."""
    torch.manual_seed(0)
    model = MappingNetwork(image_size=128, num_ws=10, w_dim=64, channels=(8, 8, 16, 16, 32, 32, 32, 32))
    return save_mapper(model, tmp_path_factory.mktemp("mapper"))


def reenact(source: Path, driving: Path, out: Path, mapper: Path, cache: Path, *extra: str) -> ScriptRun:
    return run_script("reenact", source, driving, "-o", out, "--network", FIXTURES / "sg2_64.pkl", "--mapper", mapper,
                      "steps=3", "loss.lpips=0", "loss.id=0", *extra, cache=cache)  # fmt: skip


def test_grid_clip_keeps_frames_fps_audio_duration(tmp_path, mapper_dir):
    out = tmp_path / "out.mp4"
    proc = reenact(SOURCE, DRIVING, out, mapper_dir, tmp_path / "cache")
    assert proc.returncode == 0, proc.stderr[-2000:]
    info, src = probe_video(out), probe_video(DRIVING)
    assert info.frame_count == 75 and info.fps == 25.0 and info.has_audio and info.audio_codec == "aac"
    assert (info.width, info.height) == (64, 64)
    assert abs(info.duration - src.duration) <= 0.05
    with VideoReader(out) as reader:
        assert sum(1 for _ in reader) == 75
    assert "inverted in 3 steps" in proc.stdout
    # The second run takes the source latent from the cache, and --concat writes three panels.
    out2 = tmp_path / "concat.mp4"
    proc = reenact(SOURCE, DRIVING, out2, mapper_dir, tmp_path / "cache", "--concat")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "from the cache" in proc.stdout
    info2 = probe_video(out2)
    assert (info2.width, info2.height) == (3 * 64, 64) and info2.frame_count == 75
    with VideoReader(out2) as reader:
        first = next(iter(reader))
    with VideoReader(out) as reader:
        result = next(iter(reader))
    assert np.abs(first[:, 128:].astype(int) - result.astype(int)).mean() < 3  # the result panel is the result


def test_frames_without_face_reuse_the_last_landmarks(tmp_path, mapper_dir):
    clip = tmp_path / "gaps.mp4"
    frames = grid_frames("grid_lbax4n")[:20]
    with VideoWriter(clip, 25.0) as writer:
        for t, frame in enumerate(frames):
            writer.write(np.zeros_like(frame) if t in (0, 7, 8) else frame)
    out = tmp_path / "out.mp4"
    proc = reenact(SOURCE, clip, out, mapper_dir, tmp_path / "cache")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "3 of 20 driving frames had no face" in proc.stdout
    assert probe_video(out).frame_count == 20


def test_single_driving_image_and_clear_errors(tmp_path, mapper_dir):
    driving = SAMPLES / "images" / "grid_lrwp9a_frame010_openmouth.png"
    proc = reenact(SOURCE, driving, tmp_path / "one.mp4", mapper_dir, tmp_path / "cache")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "one.png").is_file()
    # A given latent is used as is (no inversion, no cache), and a wrong shape is a clear error.
    np.save(tmp_path / "w.npy", np.zeros((10, 64), np.float32))
    proc = reenact(
        SOURCE, driving, tmp_path / "two.png", mapper_dir, tmp_path / "nocache", f"latent={tmp_path / 'w.npy'}"
    )
    assert proc.returncode == 0 and "inverted" not in proc.stdout and not (tmp_path / "nocache").exists()
    np.save(tmp_path / "bad.npy", np.zeros((16, 512), np.float32))
    proc = reenact(SOURCE, driving, tmp_path / "3.png", mapper_dir, tmp_path / "c", f"latent={tmp_path / 'bad.npy'}")
    assert proc.returncode != 0 and "latent has shape (16, 512)" in proc.stderr
    blank = tmp_path / "blank.png"
    from PIL import Image

    Image.fromarray(np.full((100, 100, 3), 90, np.uint8)).save(blank)
    proc = reenact(blank, DRIVING, tmp_path / "x.mp4", mapper_dir, tmp_path / "cache")
    assert proc.returncode != 0 and "no face found in" in proc.stderr and "Traceback" not in proc.stderr
    proc = reenact(SOURCE, DRIVING, tmp_path / "x.mp4", tmp_path / "nomapper", tmp_path / "cache")
    assert proc.returncode != 0 and "mapper.json" in proc.stderr
    # The generator under bf16 autocast (with the given latent): the same frame at bf16's precision.
    proc = reenact(SOURCE, driving, tmp_path / "bf16.png", mapper_dir, tmp_path / "c", f"latent={tmp_path / 'w.npy'}",
                   "precision=bf16")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    fp32, bf16 = (np.asarray(Image.open(tmp_path / f"{n}.png")).astype(int) for n in ("two", "bf16"))
    assert fp32.shape == bf16.shape and 0 < np.abs(fp32 - bf16).mean() < 8
    proc = reenact(SOURCE, driving, tmp_path / "4.png", mapper_dir, tmp_path / "c", "precision=fp64")
    assert proc.returncode == 1 and "precision must be one of fp32, bf16, fp16, got 'fp64'" in proc.stderr


def test_reenactor_feeds_the_mapper_what_it_was_trained_on(mapper_dir):
    from conftest import detector, grid_track, load_fixture

    from reenactment.faces.landmark_image import render_landmark_images
    from reenactment.model.mapper import load_mapper
    from reenactment.pipeline import DrivingOptions, Reenactor, Source, track_driving

    G = load_fixture("sg2_64").eval()
    mapper = load_mapper(mapper_dir)
    track = track_driving(DRIVING, detector("dlib"), G.img_resolution, DrivingOptions())
    assert track.points.shape == (75, 70, 2) and track.missing == 0 and track.fps == 25.0 and track.has_audio
    # Driving landmarks are the smoothed detections carried into the steady aligned crop (as prepare_dataset does).
    raw = grid_track("grid_lbax4n", "dlib")
    assert np.abs(track.points[:, 48:68].std(0) - 0).mean() > 0.1  # the mouth moves
    assert np.corrcoef(track.points[:, 66, 1] - track.points[:, 62, 1], raw[:, 66, 1] - raw[:, 62, 1])[0, 1] > 0.9
    w_s = G.mean_w()
    source = Source(w_s, np.zeros((64, 64, 3), np.uint8), track.points[0], cached=False)
    reenactor = Reenactor(G, mapper, source, torch.device("cpu"))
    # Landmark images are drawn in the mapper's training frame (1024 px) at its input size.
    expected = render_landmark_images(track.points[:3] * (1024 / 64), size=128, image_size=1024)
    np.testing.assert_array_equal(reenactor.render(track.points[:3]), expected)
    with torch.no_grad():
        w = mapper.predict(w_s, expected, reenactor.L_s)
        zero = w_s + mapper(torch.zeros(1, 3, 128, 128))
    torch.testing.assert_close(w[0], zero[0])  # frame 0 is the source's own landmarks: a zero delta
    assert not torch.equal(w[0], w[2])
    from stylegan3.sampling import synthesize, to_uint8

    np.testing.assert_array_equal(reenactor.frames(track.points[:3]), to_uint8(synthesize(G, w)))


def test_paste_back_into_the_source_photo(tmp_path, mapper_dir):
    from PIL import Image

    from stylegan3.images import read_image

    driving = SAMPLES / "images" / "grid_lrwp9a_frame010_openmouth.png"
    proc = reenact(SOURCE, driving, tmp_path / "p.png", mapper_dir, tmp_path / "cache", "--paste-back")
    assert proc.returncode == 0, proc.stderr[-2000:]
    photo, out = read_image(SOURCE), np.asarray(Image.open(tmp_path / "p.png"))
    assert out.shape == photo.shape  # 1350 x 1350: already even
    # Outside the face the photo is untouched; on the face the (untrained) result replaced it.
    assert np.array_equal(out[:100, :100], photo[:100, :100]) and np.array_equal(out[-100:], photo[-100:])
    centre = (slice(600, 700), slice(620, 730))
    assert np.abs(out[centre].astype(int) - photo[centre].astype(int)).mean() > 20
    # A whole clip with its sound, pasted into the photo at a third of its size (450 px: the encoder's work on 75
    # frames of 2700 x 1350 cost this test half a minute; the paste itself is checked above at full size).
    small = tmp_path / "small.png"
    Image.fromarray(photo).resize((450, 450), Image.Resampling.LANCZOS).save(small)
    proc = reenact(small, DRIVING, tmp_path / "pc.mp4", mapper_dir, tmp_path / "cache", "--paste-back", "--concat")
    assert proc.returncode == 0, proc.stderr[-2000:]
    info = probe_video(tmp_path / "pc.mp4")
    assert (info.width, info.height) == (450 + 450, 450) and info.frame_count == 75 and info.has_audio


def short_clip(path: Path, frames: int = 20) -> Path:
    """``frames`` frames of the GRID clip from frame 14, where the mouth moves (a quicker driving video)."""
    with VideoWriter(path, 25.0) as writer:
        for frame in grid_frames("grid_lbax4n")[14 : 14 + frames]:
            writer.write(frame)
    return path


def test_save_track_and_landmark_panel(tmp_path, mapper_dir):
    from conftest import detector

    from reenactment.faces.align import crop_transform, face_crop, transform_points
    from reenactment.faces.landmark_image import render_landmark_image

    clip = short_clip(tmp_path / "short.mp4")
    out, track = tmp_path / "out.mp4", tmp_path / "track.npz"
    extra = (f"save_track={track}", "--concat", "show_landmarks=true")
    proc = reenact(SOURCE, clip, out, mapper_dir, tmp_path / "cache", *extra)
    assert proc.returncode == 0, proc.stderr[-2000:]
    with np.load(track) as data:
        saved = {k: data[k] for k in data.files}
    assert set(saved) == {"source", "driving", "target", "fps", "reference", "motion"}
    assert saved["source"].shape == (70, 2) and saved["driving"].shape == saved["target"].shape == (20, 70, 2)
    assert saved["fps"] == 25.0 and str(saved["motion"]) == "relative"
    ref = int(saved["reference"])
    assert f"motion: relative, from driving frame {ref}" in proc.stdout
    # The source's landmarks in the generator's 64 px aligned frame; the target starts from them at the reference.
    _, points = detector("dlib").read(SOURCE)
    expected = transform_points(crop_transform(face_crop(points), 64), points.astype(np.float64))
    np.testing.assert_allclose(saved["source"], expected, atol=1e-3)
    np.testing.assert_allclose(saved["target"][ref], saved["source"], atol=1e-3)
    assert np.abs(saved["target"] - saved["source"]).max() > 0.3  # the other frames move
    info = probe_video(out)
    assert (info.width, info.height) == (4 * 64, 64) and info.frame_count == 20
    # The last panel is the target's landmark image.
    with VideoReader(out) as reader:
        for t, frame in enumerate(reader):
            if t in (0, 12):
                drawn = render_landmark_image(saved["target"][t], size=64, image_size=64).astype(float)
                assert np.corrcoef(frame[:, 192:].astype(float).ravel(), drawn.ravel())[0, 1] > 0.8


def test_python_api_motion_options(tmp_path, mapper_dir):
    """``reenact()`` takes the motion options from ``DrivingOptions`` and renders the target for the mapper (the
    untrained mapper barely changes the face, so what it is shown is recorded instead)."""
    from conftest import detector, load_fixture

    from reenactment.model.mapper import load_mapper
    from reenactment.pipeline import DrivingOptions, Reenactor, ReenactResult, SourceInversion, prepare_source
    from reenactment.pipeline import reenact as reenact_api

    G = load_fixture("sg2_64").eval()
    det = detector("dlib")
    source = prepare_source(G, SOURCE, det, SourceInversion(), torch.device("cpu"), latent=G.mean_w().numpy())
    reenactor = Reenactor(G, load_mapper(mapper_dir), source, torch.device("cpu"))
    shown: list[np.ndarray] = []
    frames = reenactor.frames
    reenactor.frames = lambda points, *images: (shown.append(points), frames(points, *images))[1]
    clip = short_clip(tmp_path / "short.mp4", 12)

    def run(options: DrivingOptions) -> tuple[np.ndarray, ReenactResult]:
        shown.clear()
        result = reenact_api(
            reenactor, clip, tmp_path / "api.mp4", det, options=options, batch_size=5, track_file=tmp_path / "t.npz"
        )
        assert result.frames == 12 and probe_video(tmp_path / "api.mp4").frame_count == 12
        with np.load(tmp_path / "t.npz") as data:
            np.testing.assert_array_equal(np.concatenate(shown), data["target"])  # the mapper sees the target
            return data["target"], result

    still, result = run(DrivingOptions(motion_scale=0.0))
    np.testing.assert_allclose(still, np.broadcast_to(source.points, still.shape), atol=1e-4)
    moving, result = run(DrivingOptions())
    assert result.motion == "relative" and np.abs(moving - source.points).max() > 0.3
    absolute, result = run(DrivingOptions(motion="absolute"))
    assert result.reference is None and np.abs(absolute - moving).max() > 0.3
    lips, _ = run(DrivingOptions(regions="lips", reference="first"))
    np.testing.assert_array_equal(lips[:, :48], np.broadcast_to(source.points[:48].astype(np.float32), (12, 48, 2)))
    assert np.abs(lips[:, 48:68] - source.points[48:68]).max() > 0.1
    with pytest.raises(ValueError, match="regions: unknown mouth"):
        reenact_api(reenactor, clip, tmp_path / "bad.mp4", det, options=DrivingOptions(regions="mouth"))
    assert not (tmp_path / "bad.mp4").exists()


def test_bad_motion_option_fails_before_any_work(tmp_path, mapper_dir):
    proc = reenact(SOURCE, DRIVING, tmp_path / "x.mp4", mapper_dir, tmp_path / "cache", "regions=lips,mouth")
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("error: regions: unknown mouth; use a comma list of all")
    assert "inverted" not in proc.stdout and not (tmp_path / "cache").exists()


def test_driving_problems_are_found_before_the_source_inversion(tmp_path, mapper_dir):
    from reenactment.pipeline import check_driving

    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00\x00\x00\x18ftypmp42 cut short")
    image = tmp_path / "driving.png"
    image.write_bytes(SOURCE.read_bytes()[:200])  # a cut-off photo
    cases = [
        (broken, "out.mp4", "broken.mp4"),
        (DRIVING, "out.avi", "out.avi: a reenacted video is written as .mp4 or .mov"),
        (SOURCE, "out.tif", "out.tif: images are written as"),
        (image, "out.png", "driving.png"),
    ]
    for driving, out, message in cases:
        with pytest.raises(ValueError, match=message.replace(".", r"\.")):
            check_driving(driving, tmp_path / out)
    assert check_driving(SOURCE, tmp_path / "x.mp4") == tmp_path / "x.png"  # an image for a driving image
    assert check_driving(DRIVING, tmp_path / "x.mp4") == tmp_path / "x.mp4"
    # reenact.py checks first: 100000 inversion steps would take hours, the error comes at once, in one line.
    proc = reenact(SOURCE, broken, tmp_path / "out.mp4", mapper_dir, tmp_path / "cache", "steps=100000")
    assert proc.returncode != 0 and "broken.mp4" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert not (tmp_path / "out.mp4").exists() and not (tmp_path / "cache" / "latents").exists()
