"""Metrics against independent references: scikit-image, closed forms, known shifts and rotations, sample faces."""

from __future__ import annotations

import itertools
from functools import cache

import numpy as np
import pytest
import torch
from conftest import SAMPLES, detector, grid_frames
from PIL import Image
from skimage.metrics import mean_squared_error, peak_signal_noise_ratio, structural_similarity

from reenactment.evaluation import metrics as M
from reenactment.faces import head_pose
from reenactment.faces.align import align_face
from stylegan3.images import read_image

IMAGES = SAMPLES / "images"
PEOPLE = ("003", "021", "024", "061", "062", "087")


def _tensor(images: list[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255


@cache
def london(person: str, expression: str) -> tuple[np.ndarray, np.ndarray]:
    """A London photo and its dlib landmarks."""
    image = read_image(IMAGES / f"london_{person}_{expression}.jpg")
    return image, detector("dlib")(image)


@cache
def small(name: str, side: int = 200) -> np.ndarray:
    """A sample photo shrunk to side x side (not square crops: the reference needs no alignment)."""
    image = Image.fromarray(read_image(IMAGES / name))
    return np.asarray(image.resize((side, side), Image.Resampling.BILINEAR))


def test_pixel_metrics_match_scikit_image_and_numpy():
    a, b, c = small("london_003_neutral.jpg"), small("london_003_smiling.jpg"), small("london_021_neutral.jpg")
    x, y = _tensor([a, b]), _tensor([b, c])
    got = {"MSE": M.mse(x, y), "L1": M.l1(x, y), "PSNR": M.psnr(x, y), "SSIM": M.ssim(x, y)}
    for i, (p, q) in enumerate([(a, b), (b, c)]):
        p, q = p / 255.0, q / 255.0
        ref = {
            "MSE": mean_squared_error(p, q),
            "L1": np.abs(p - q).mean(),
            "PSNR": peak_signal_noise_ratio(p, q, data_range=1.0),
            "SSIM": structural_similarity(
                p, q, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0, channel_axis=2
            ),
        }
        for name, value in ref.items():
            assert got[name][i].item() == pytest.approx(value, rel=1e-3), name
    assert M.ssim(x, x).tolist() == pytest.approx([1.0, 1.0])
    assert torch.isinf(M.psnr(x, x)).all()
    with pytest.raises(ValueError, match="at least 11x11"):
        M.ssim(x[..., :10, :10], y[..., :10, :10])
    with pytest.raises(ValueError, match="one shape"):
        M.mse(x, y[:1])


@pytest.mark.filterwarnings("ignore:The `disp` argument is deprecated:DeprecationWarning")  # pytorch-fid's call
def test_frechet_distance_matches_closed_form():
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    d1, d2 = rng.uniform(0.2, 3.0, 6), rng.uniform(0.2, 3.0, 6)
    closed = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(d1) - np.sqrt(d2)) ** 2)
    assert M.frechet_distance(mu1, np.diag(d1), mu2, np.diag(d2)) == pytest.approx(closed, rel=1e-9)
    # The same covariances in a rotated basis commute, so the closed form still holds.
    q, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    s1, s2 = q @ np.diag(d1) @ q.T, q @ np.diag(d2) @ q.T
    assert M.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(closed, rel=1e-6)
    # Gaussian samples: their statistics give the distance of the true parameters, up to sampling error.
    f1 = rng.normal(size=(40000, 6)) * np.sqrt(d1) + mu1
    f2 = rng.normal(size=(40000, 6)) * np.sqrt(d2) + mu2
    assert M.fid_from_features(f1, f2) == pytest.approx(closed, rel=0.05)
    from pytorch_fid.fid_score import calculate_frechet_distance

    stats = (*M.feature_statistics(f1), *M.feature_statistics(f2))
    assert M.frechet_distance(*stats) == pytest.approx(calculate_frechet_distance(*stats), rel=1e-9)
    assert M.frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0.0, abs=1e-9)


def test_fid_of_a_set_against_itself_is_zero_with_a_random_inception():
    torch.manual_seed(0)
    # pytorch-fid's FID Inception with random weights (no download), cut after its first block (64-d features:
    # a 2048x2048 matrix square root alone takes half a minute here), fed small images instead of 299x299.
    net = M.load_fid_inception(random_weights=True, dims=64)
    net.resize_input = False
    x = torch.rand(4, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    y = (x * 0.5 + 0.25).flip(-1)
    fx, fy = M.inception_features(x, net), M.inception_features(y, net)
    assert fx.shape == (4, 64)
    scale = np.trace(np.cov(fx, rowvar=False)) + np.trace(np.cov(fy, rowvar=False))
    same = M.fid_from_features(fx, M.inception_features(x, net))
    other = M.fid_from_features(fx, fy)
    assert abs(same) <= 1e-6 * scale
    assert other > 1e-3 * scale


def test_fid_inception_weights_come_from_a_file_or_a_clear_error(tmp_path, monkeypatch):
    from unittest import mock

    import pytorch_fid.inception as fid_inception

    import stylegan3

    monkeypatch.setenv("REENACT_CACHE", str(tmp_path))
    monkeypatch.setenv("REENACT_OFFLINE", "1")
    with pytest.raises(stylegan3.WeightsNotFoundError, match=M.FID_INCEPTION_FILE):
        M.load_fid_inception()
    # A file laid out like pytorch-fid's release (random values here) is read from the cache, strictly.
    built = []
    make = fid_inception._inception_v3
    with (
        mock.patch.object(fid_inception, "_inception_v3", lambda *a, **k: built.append(make(*a, **k)) or built[-1]),
        mock.patch.object(fid_inception, "load_state_dict_from_url", lambda *a, **k: built[-1].state_dict()),
    ):
        state = fid_inception.fid_inception_v3().state_dict()
    (tmp_path / "fid").mkdir()
    torch.save(state, tmp_path / "fid" / M.FID_INCEPTION_FILE)
    net = M.load_fid_inception(dims=64)
    assert torch.equal(net.blocks[0][0].conv.weight, state["Conv2d_1a_3x3.conv.weight"])
    del state["fc.bias"]
    torch.save(state, tmp_path / "broken.pth")
    with pytest.raises(stylegan3.WeightsFileError, match="fc.bias"):
        M.load_fid_inception(tmp_path / "broken.pth", dims=64)


def test_fid_inception_is_pytorch_fids_network():
    """The network assembled without pytorch-fid's loader equals pytorch-fid's own InceptionV3 (its download
    replaced by the same weights here): same parameter names and values, same features."""
    from unittest import mock

    import pytorch_fid.inception as fid_inception

    torch.manual_seed(0)
    state = M.fid_inception3().state_dict()  # random values in the weights file's layout
    ours = M.FIDInception(state).eval()
    with mock.patch.object(fid_inception, "load_state_dict_from_url", lambda *a, **k: state):
        theirs = fid_inception.InceptionV3().eval()
    assert ours.state_dict().keys() == theirs.state_dict().keys()
    assert all(torch.equal(v, theirs.state_dict()[k]) for k, v in ours.state_dict().items())
    x = torch.rand(2, 3, 80, 96, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        (a,), (b,) = ours(x), theirs(x)
    assert a.shape == (2, 2048, 1, 1) and torch.equal(a, b)  # through every FID block


def _shift_right(image: np.ndarray, k: int) -> np.ndarray:
    """Content moved k pixels to the right, the left edge replicated."""
    return np.concatenate([np.repeat(image[:, :1], k, axis=1), image[:, : image.shape[1] - k]], axis=1)


def test_landmark_distance_is_zero_for_identical_images_and_grows_with_a_shift():
    det = detector("dlib")
    image, points = london("087", "smiling")
    aligned, _ = align_face(image, points, size=512)
    p0 = det(aligned)
    assert M.landmark_distance(p0, det(aligned.copy()), (512, 512), (512, 512), size=256) == 0.0
    # LMD is measured at 256x256: a k-pixel shift at 512 is k/2 there.
    lmds = []
    for k in (8, 16, 32):
        lmd = M.landmark_distance(p0, det(_shift_right(aligned, k)), (512, 512), (512, 512), size=256)
        assert lmd == pytest.approx(k / 2, rel=0.2), k
        lmds.append(lmd)
    assert lmds == sorted(lmds)
    # Exact scaling: 10 px at 1024 is 2.5 px at 256; different source resolutions compare.
    assert M.landmark_distance(p0, p0 + [10, 0], (1024, 1024), (1024, 1024)) == pytest.approx(2.5)
    assert M.landmark_distance(p0 * 2 + 0.5, p0, (1024, 1024), (512, 512)) == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize("angles", [(20, -10, 5), (-30, 15, -12), (5, 5, 40), (0, 0, 0), (45, -25, 10)])
def test_head_pose_recovers_a_known_rotation(angles):
    model = head_pose.FACE_MODEL_68
    rotation = head_pose.rotation_matrix(*angles)
    points = head_pose.project(model, rotation, 60.0, np.array([128.0, 140.0]))
    pose = head_pose.estimate_pose(points)
    assert np.abs(pose.angles - angles).max() < 1.0
    assert np.abs(pose.angles - angles).max() < 1e-4  # exact under the model's own projection
    assert pose.scale == pytest.approx(60.0)
    assert head_pose.euler_angles(rotation) == pytest.approx(angles, abs=1e-9)


def test_rotation_distance_under_perspective_projection():
    """Real cameras are perspective: at ~10 inter-ocular distances the absolute angles are off by a degree or two,
    but the pose differences that ARD averages are recovered within 1 degree."""
    model = head_pose.FACE_MODEL_68

    def perspective(angles, distance=10.0):
        x = model @ head_pose.rotation_matrix(*angles).T + [0.0, 0.0, distance]
        return 60.0 * distance * x[:, :2] / x[:, 2:] + 128.0

    rng = np.random.default_rng(0)
    for _ in range(20):
        a = rng.uniform(-15, 15, 3)
        b = a + rng.uniform(-5, 5, 3)
        noise = rng.normal(0, 0.3, (68, 2))
        got = M.rotation_distance(perspective(a), perspective(b) + noise)
        assert np.abs(got - np.abs(b - a)).max() < 1.0


def test_face_model_is_what_the_fit_script_derives():
    pytest.importorskip("mediapipe")
    from scripts.fit_face_model_3d import faces_3d

    faces = faces_3d([IMAGES / f"london_{p}_neutral.jpg" for p in PEOPLE])
    model = head_pose.fit_face_model(faces)
    assert np.abs(model - head_pose.FACE_MODEL_68).max() < 2e-4
    mirrored = model[list(head_pose.MIRROR_68)] * [-1, 1, 1]
    assert np.abs(mirrored - model).max() < 1e-9  # left-right symmetric
    # Frontal photos come out near frontal (yaw, roll within a few degrees; pitch 0 on average by construction).
    poses = np.array([head_pose.estimate_pose(london(p, "neutral")[1]).angles for p in PEOPLE])
    assert np.abs(poses[:, [0, 2]]).max() < 5.0
    assert abs(poses[:, 1].mean()) < 1.0


def test_dlib_embedding_separates_the_london_people():
    embed = M.DlibFaceEmbedder()
    emb = {(p, e): embed(*london(p, e)) for p in PEOPLE for e in ("neutral", "smiling")}
    assert next(iter(emb.values())).shape == (128,)
    same = [M.embedding_distance(emb[p, "neutral"], emb[p, "smiling"]) for p in PEOPLE]
    different = [M.embedding_distance(emb[a], emb[b]) for a, b in itertools.combinations(emb, 2) if a[0] != b[0]]
    print(f"dlib descriptor distance: same person {min(same):.3f}-{max(same):.3f}, "
          f"different {min(different):.3f}-{max(different):.3f}")  # fmt: skip
    assert len(different) == 60
    assert max(same) < min(different)
    assert max(same) < 0.6 < min(different)  # dlib's own threshold holds here too


def test_action_units_on_sample_faces():
    names = [u.name for u in M.ACTION_UNITS]
    neutral = {p: M.action_units(london(p, "neutral")[1]) for p in PEOPLE}
    smiling = {p: M.action_units(london(p, "smiling")[1]) for p in PEOPLE}
    assert not any(v.any() for v in neutral.values())  # a neutral face shows none of the units
    au12 = names.index("AU12")
    assert sum(v[au12] for v in smiling.values()) >= 5  # one of the six smiles is too faint for the rule
    open_mouth = read_image(IMAGES / "grid_lrwp9a_frame010_openmouth.png")
    present = dict(zip(names, M.action_units(detector("dlib")(open_mouth))))
    assert present["AU25"] and present["AU26"]
    # Blinks in a GRID clip: some frames have the eyes closed, most do not.
    blink = np.array([M.action_units(detector("dlib")(f))[names.index("AU45")] for f in grid_frames("grid_bbaf2n")])
    assert 0 < blink.mean() < 0.3
    pts = london("062", "smiling")[1]
    assert M.action_unit_hamming(pts, pts) == 0.0
    assert M.action_unit_hamming(london("062", "neutral")[1], pts) == pytest.approx(3 / len(names))
    # In-plane rotation of the whole face changes nothing.
    theta = np.radians(25)
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    assert (M.action_units(pts @ rot.T + 40) == M.action_units(pts)).all()


class _MeanEncoder(torch.nn.Module):
    """A stand-in identity encoder: 4x4 average-pooled colours."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.adaptive_avg_pool2d(x, 4).flatten(1) + 1.0


def test_identity_and_lpips_mechanics_with_stand_in_networks():
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    y = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    enc = _MeanEncoder()
    d = M.identity_distance(x, y, enc)
    ex, ey = enc(x * 2 - 1), enc(y * 2 - 1)
    ref = 1 - torch.nn.functional.cosine_similarity(ex, ey).double()
    assert d.tolist() == pytest.approx(ref.tolist(), abs=1e-6)
    assert M.identity_distance(x, x, enc).tolist() == pytest.approx([0.0, 0.0], abs=1e-6)
    assert M.identity_distance(x, y[:1], enc).shape == (2,)  # one reference for all

    def lp(a, b):
        assert a.min() >= -1 and a.max() <= 1 and a.min() < 0  # the [-1, 1] range reaches the network
        return (a - b).abs().mean((1, 2, 3))

    assert M.lpips_distance(x, y, lp).tolist() == pytest.approx((2 * (x - y)).abs().mean((1, 2, 3)).tolist())
