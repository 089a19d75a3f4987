"""Issue 20: joint_pass auto, a step loop without per-step host reads (against a plain reference loop), the video warm
start batched across videos (= batch 1 bit for bit, one pass with joint_pass, kill/resume, retries, ranks), and
invert_dataset.py estimate=true (its arithmetic, and that it writes nothing)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import FIXTURES, LONDON, SAMPLES, load_fixture, write_loss_weights
from PIL import Image

from inversion.dataset import (
    DatasetInversion,
    frames_from_input,
    invert_calls,
    load_latents,
    make_shards,
    pending_work,
    video_rounds,
)
from inversion.estimate import StepTiming, estimate_cost, seconds_per_step
from inversion.inverter import InverterOptions, invert, resolve_joint_pass
from inversion.losses import InversionLoss, LossWeights, build_inversion_loss
from scripts import invert_dataset
from stylegan3.sampling import synthesize

NET = str(FIXTURES / "sg2_64.pkl")
MSE_ONLY = LossWeights(lpips=0.0, id=0.0)
LENGTHS = (3, 1, 2)  # three videos of different lengths
WARM = ["warm_start=sequential", "steps=6", "warm_steps=3", "shard_size=2"]


@pytest.fixture(scope="module")
def G():
    return load_fixture("sg2_64").eval().requires_grad_(False)


@pytest.fixture(scope="module")
def full_loss_files(tmp_path_factory) -> list[str]:
    arcface, alexnet = write_loss_weights(tmp_path_factory.mktemp("weights"))
    return [f"arcface={arcface}", f"alexnet={alexnet}"]


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> Path:
    """Videos v0, v1, v2 of LENGTHS frames (64 px crops of the London photos)."""
    folder = tmp_path_factory.mktemp("videos")
    (folder / "frames").mkdir()
    lines, names = [], iter(LONDON)
    for v, length in enumerate(LENGTHS):
        for t in range(length):
            rel = f"frames/v{v}_{t}.png"
            Image.open(SAMPLES / "images" / next(names)).convert("RGB").resize((64, 64)).save(folder / rel)
            lines.append(json.dumps({"identity": f"p{v}", "video": f"v{v}", "frame": t, "image": rel}))
    (folder / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    return folder / "manifest.jsonl"


def run_main(manifest: Path, out: Path, *extra: str) -> Path:
    return invert_dataset.main(["--input", str(manifest), "--out", str(out), "--network", NET, *WARM, *extra])


def same_latents(a: Path, b: Path) -> bool:
    la, lb = load_latents(a), load_latents(b)
    return la.keys() == lb.keys() and all(np.array_equal(la[k], lb[k]) for k in la)


def reference_invert(G, targets, loss_fn, opts: InverterOptions, w_init=None):
    """The plain loop: every image on its own or the batch in one pass, host reads every step."""
    n = targets.shape[0]
    w = (G.mean_w()[None].expand(n, -1, -1) if w_init is None else w_init).clone().contiguous().requires_grad_(True)
    adam = torch.optim.Adam([w], lr=opts.lr, betas=(opts.beta1, opts.beta2), eps=opts.eps)
    groups = [slice(0, n)] if opts.joint_pass else [slice(i, i + 1) for i in range(n)]
    feats = [loss_fn.target_features(targets[g]) for g in groups]
    best, stale, active = [float("inf")] * n, [0] * n, [True] * n
    steps_run, last, history = [0] * n, [0.0] * n, []
    last_terms: dict[str, list[float]] = {}
    for step in range(opts.steps):
        adam.zero_grad(set_to_none=True)
        for g, f in zip(groups, feats):
            if not opts.joint_pass and not active[g.start]:
                continue
            w_g = w[g]  # one slice for both uses: two would sum the gradient in another order
            total, terms = loss_fn(synthesize(G, w_g), targets[g], w_g, f)
            total.sum().backward()
            for i, value in zip(range(g.start, g.stop), total.tolist()):
                last[i] = value
            for name, value in terms.items():
                last_terms.setdefault(name, [0.0] * n)[g] = value.tolist()
        frozen = w.detach().clone()
        adam.step()
        with torch.no_grad():
            for i in range(n):
                if not active[i]:
                    w[i] = frozen[i]
        steps_run = [s + a for s, a in zip(steps_run, active)]
        if opts.log_every and (step % opts.log_every == 0 or step == opts.steps - 1):
            history.append((step, {k: list(v) for k, v in last_terms.items()}))
        if opts.early_stop_patience:
            for i in range(n):
                if best[i] == float("inf") or last[i] < np.float32(best[i]) * np.float32(1 - opts.early_stop_min_delta):
                    best[i], stale[i] = last[i], 0
                else:
                    stale[i] += 1
                active[i] = active[i] and stale[i] < opts.early_stop_patience
            if not any(active):
                break
    return w.detach(), steps_run, history


def test_joint_pass_auto_and_bad_values(manifest, tmp_path, capsys):
    assert resolve_joint_pass("auto", "cuda") and not resolve_joint_pass("auto", torch.device("cpu"))
    assert resolve_joint_pass(True, "cpu") and not resolve_joint_pass("false", "cuda")
    assert InverterOptions().joint_pass == "auto" and InverterOptions().resolved("cuda:1").joint_pass is True
    with pytest.raises(ValueError, match="joint_pass must be true, false or auto, got 'maybe'"):
        resolve_joint_pass("maybe", "cpu")
    with pytest.raises(SystemExit, match="joint_pass must be true, false or auto") as err:
        run_main(manifest, tmp_path / "o", "joint_pass=maybe")
    assert "\n" not in str(err.value) and not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    ("n", "joint", "patience", "min_delta", "log_every", "full"),
    [(1, False, 0, 1e-4, 10, True), (3, False, 2, 0.02, 3, False), (3, True, 2, 0.02, 4, False)],
)
def test_step_loop_equals_the_plain_loop(G, full_loss_files, n, joint, patience, min_delta, log_every, full):
    if full:  # all four terms, random-weight ArcFace and AlexNet
        arcface, alexnet = (f.partition("=")[2] for f in full_loss_files)
        loss = build_inversion_loss(LossWeights(), arcface_path=arcface, alexnet_path=alexnet)
    else:
        loss = InversionLoss(MSE_ONLY)
    targets = torch.rand(n, 3, 64, 64, generator=torch.Generator().manual_seed(n)) * 2 - 1
    opts = InverterOptions(steps=12, joint_pass=joint, early_stop_patience=patience, early_stop_min_delta=min_delta)
    opts.log_every = log_every
    result = invert(G, targets, loss, opts)
    w, steps_run, history = reference_invert(G, targets, loss, opts)
    assert torch.equal(result.w_plus, w) and result.steps_run == steps_run and result.history == history
    if patience:
        assert max(steps_run) < 12  # early stopping did stop


def test_step_loop_reads_the_host_only_every_log_every_steps(G, monkeypatch):
    reads = []
    here = str(Path(invert.__code__.co_filename))
    for name in ("item", "tolist", "cpu", "__bool__"):
        original = getattr(torch.Tensor, name)

        def counted(self, *args, _original=original, _name=name, **kwargs):
            if sys._getframe(1).f_code.co_filename == here:
                reads.append(_name)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counted)
    targets = torch.rand(2, 3, 64, 64) * 2 - 1
    opts = InverterOptions(steps=40, log_every=10, early_stop_patience=100)
    invert(G, targets, InversionLoss(MSE_ONLY), opts)
    # Per check (steps 0, 10, 20, 30, 39): active.tolist() and the history's 2 terms (.cpu().tolist()); steps_run
    # at the end. No .item() and no Python `if` on a tensor.
    assert len(reads) == 5 * (1 + 2 * 2) + 1 and set(reads) == {"tolist", "cpu"}, reads


def test_video_rounds_and_calls():
    rounds = list(video_rounds([3, 1, 2], 2))
    assert rounds == [[(0, 0), (1, 0)], [(0, 1), (2, 0)], [(0, 2), (2, 1)]]
    assert list(video_rounds([2, 0, 1], 4)) == [[(0, 0), (2, 0)], [(0, 1)]]
    calls = invert_calls([3, 1, 2], 2, sequential=True)
    assert calls.first == [2, 1] and calls.warm == [1, 2]
    assert invert_calls([5, 2], 2, sequential=False).first == [2, 2, 1, 2]
    assert invert_calls([4], 1, sequential=True).warm == [1, 1, 1]


@pytest.fixture(scope="module")
def single_run(manifest, full_loss_files, tmp_path_factory) -> Path:
    """batch_size=1, full loss: the reference for the batched runs."""
    return run_main(manifest, tmp_path_factory.mktemp("b1"), "batch_size=1", *full_loss_files)


def test_batched_warm_start_equals_batch_1(manifest, single_run, full_loss_files, tmp_path):
    out = run_main(manifest, tmp_path / "b2", "batch_size=2", *full_loss_files)
    assert same_latents(out, single_run)
    assert (out / "losses.jsonl").read_text() == (single_run / "losses.jsonl").read_text()
    steps = {r["id"]: r["steps"] for r in map(json.loads, (out / "losses.jsonl").read_text().splitlines())}
    assert steps == {"v0/000000": 6, "v0/000001": 3, "v0/000002": 3, "v1/000000": 6, "v2/000000": 6, "v2/000001": 3}


def test_batched_warm_start_killed_and_resumed(manifest, single_run, full_loss_files, tmp_path, monkeypatch):
    written = []
    real = invert_dataset.write_shard

    def write_then_die(out, k, *args, **kwargs):
        real(out, k, *args, **kwargs)
        written.append(k)
        raise KeyboardInterrupt  # killed right after the first finished shard

    monkeypatch.setattr(invert_dataset, "write_shard", write_then_die)
    with pytest.raises(KeyboardInterrupt):
        run_main(manifest, tmp_path / "r", "batch_size=2", *full_loss_files)
    assert written == [1]  # v1 (one frame) is complete first, while v0 is still running
    monkeypatch.setattr(invert_dataset, "write_shard", real)
    out = run_main(manifest, tmp_path / "r", "batch_size=2", *full_loss_files)
    assert same_latents(out, single_run)


def test_failed_frame_retried_by_the_rerun(manifest, single_run, full_loss_files, tmp_path):
    frames = frames_from_input(manifest)
    broken = frames[4].path.read_bytes()  # v2/000000
    Image.new("RGB", (64, 48)).save(frames[4].path)  # not square
    try:
        out = run_main(manifest, tmp_path / "f", "batch_size=2", *full_loss_files)
    finally:
        frames[4].path.write_bytes(broken)
    failed = [json.loads(line)["id"] for line in (out / "failures.jsonl").read_text().splitlines()]
    assert failed == ["v2/000000"] and "v2/000001" in load_latents(out)  # v2 went on from the mean w
    run_main(manifest, out, "batch_size=2", *full_loss_files)  # retries v2, the whole video
    assert same_latents(out, single_run) and (out / "failures.jsonl").read_text() == ""


def test_ranks_and_retries_of_batched_warm_start(G, manifest, tmp_path):
    frames = frames_from_input(manifest)
    shards = make_shards(frames, 2, by_video=True)
    opts = InverterOptions(steps=4)
    runner = DatasetInversion(G, InversionLoss(MSE_ONLY), opts, torch.device("cpu"), 1, "sequential", 2)
    single = {k: r for k, r in runner.run(list(enumerate(shards)))}
    runner.batch_size = 2
    for rank in range(2):  # torchrun's split: shard k on rank k % 2, each rank batching its own videos
        for k, result in runner.run(pending_work(tmp_path, shards, rank, 2, sequential=True)):
            assert k % 2 == rank and result["ids"] == single[k]["ids"]
            assert np.array_equal(result["w"], single[k]["w"])
    # A frame that cannot be read: recorded, the video goes on from the frame before it, the others are unchanged.
    broken = frames[1].path.read_bytes()
    Image.new("RGB", (64, 48)).save(frames[1].path)  # not square
    try:
        results = dict(runner.run(list(enumerate(shards))))
    finally:
        frames[1].path.write_bytes(broken)
    assert [(f.id, "not square" in r) for f, r in results[0]["failures"]] == [("v0/000001", True)]
    assert results[0]["ids"] == ["v0/000000", "v0/000002"] and results[0]["steps"] == [4, 2]
    assert all(np.array_equal(results[k]["w"], single[k]["w"]) for k in (1, 2))


def test_joint_pass_puts_the_batch_in_one_pass(G, manifest):
    shards = make_shards(frames_from_input(manifest), 2, by_video=True)
    sizes = []
    hook = G.synthesis.register_forward_hook(lambda module, args, output: sizes.append(output.shape[0]))
    try:
        opts = InverterOptions(steps=2, joint_pass=True)
        runner = DatasetInversion(G, InversionLoss(MSE_ONLY), opts, torch.device("cpu"), 3, "sequential", 2)
        list(runner.run(list(enumerate(shards))))
    finally:
        hook.remove()
    # Round 1: the three first frames in one call (2 steps + the final loss: 3 passes of 3); rounds 2 and 3: the
    # warm frames of v0 and v2, then of v0 alone.
    assert sizes == [3] * 3 + [2] * 3 + [1] * 3


def test_seconds_per_step_and_cost_arithmetic():
    clock = [0.0]

    def run(k: int) -> None:
        clock[0] += 2.0 + 3.0 * k  # 2 s per call, 3 s per step

    assert seconds_per_step(run, 5, clock=lambda: clock[0]) == pytest.approx((3.0, 2.0))
    with pytest.raises(ValueError, match="at least 2"):
        seconds_per_step(run, 1)
    timing = StepTiming(batch=2, per_step=0.5, per_call=1.0, per_step_one=0.3, per_call_one=0.8)
    assert timing.seconds(2, 10) == pytest.approx(6.0) and timing.seconds(1, 10) == pytest.approx(3.8)
    # Videos [3, 1, 2], batch 2: first calls [2, 1], warm calls [1, 2].
    cost = estimate_cost([3, 1, 2], 2, True, 10, 4, timing, timing, world=1)
    assert cost.seconds_total == pytest.approx(6.0 + 3.8 + 2.0 + 3.0) and cost.seconds_per_gpu == cost.seconds_total
    assert (cost.frames, cost.first_frames, cost.warm_frames, cost.calls_first, cost.calls_warm) == (6, 3, 3, 2, 2)
    # Two ranks: rank 0 has videos 0 and 2 (first [2], warm [2, 1]), rank 1 video 1 (first [1]).
    two = estimate_cost([3, 1, 2], 2, True, 10, 4, timing, timing, world=2)
    assert two.seconds_per_gpu == pytest.approx(6.0 + 3.0 + 2.0) and two.seconds_total == pytest.approx(14.8)
    # No warm start: chunks [4, 1] of one shard of 5; between 1 and 4 images the time is linear.
    plain = estimate_cost([5], 4, False, 10, 4, StepTiming(4, 1.0, 2.0, 0.25, 0.5), None)
    assert plain.seconds_total == pytest.approx(12.0 + 3.0) and plain.hours_total == pytest.approx(15 / 3600)
    assert StepTiming(4, 1.0, 2.0, 0.25, 0.5).seconds(3, 10) == pytest.approx(0.5 + 1.0 + 10 * (0.25 + 0.5))
    assert "3 warm frames" in cost.report() and "warm" not in plain.report()


def test_estimate_prints_the_cost_and_writes_nothing(manifest, tmp_path, capsys):
    out = tmp_path / "never"
    run_main(manifest, out, "batch_size=2", "estimate=true", "estimate_steps=2", "loss.lpips=0", "loss.id=0")
    text = capsys.readouterr().out
    assert not out.exists()
    assert "frames: 6 (3 first frames, 3 warm frames)" in text and "steps per frame: 6 first, 3 warm" in text
    assert "invert calls: 4 (2 first, 2 warm)" in text and "device-hours" in text and "1 process" in text
