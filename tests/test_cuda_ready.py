"""The CUDA code paths, checked on the CPU: each rank on its own GPU, the process group bound to it, the syncs and
the precision of what runs there (issue: the CUDA path, ready before a GPU arrives)."""

from __future__ import annotations

import pytest
import torch

from reenactment.model import training
from stylegan3.runtime import DistEnv, init_distributed, resolve_device


def test_explicit_cuda_takes_the_ranks_gpu():
    # torchrun's rank 1 asked for device=cuda used to land on GPU 0 (torch.device("cuda") has no index).
    assert resolve_device("cuda", local_rank=1) == torch.device("cuda", 1)
    assert resolve_device("cuda", local_rank=0) == torch.device("cuda", 0)
    assert resolve_device("cuda:3", local_rank=1) == torch.device("cuda", 3)  # an explicit index stays
    assert resolve_device("cpu", local_rank=1) == torch.device("cpu")


def test_process_group_is_bound_to_the_ranks_gpu(monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    calls = []
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: calls.append(("set_device", device)))
    monkeypatch.setattr(
        torch.distributed, "init_process_group", lambda backend, **kw: calls.append(("init", backend, kw))
    )
    init_distributed(torch.device("cuda", 1), DistEnv(rank=1, world=2, local_rank=1))
    assert calls == [("set_device", torch.device("cuda", 1)), ("init", "nccl", {"device_id": torch.device("cuda", 1)})]
    calls.clear()
    init_distributed(torch.device("cpu"), DistEnv(rank=0, world=2, local_rank=0))
    assert calls == [("init", "gloo", {})]
    calls.clear()
    init_distributed(torch.device("cuda", 0), DistEnv())  # run directly: the device, no group
    assert calls == [("set_device", torch.device("cuda", 0))]
    assert torch.backends.cudnn.benchmark  # inversion's fixed shapes: cuDNN times its kernels once


def test_train_mapper_device_cuda_gets_an_indexed_device(monkeypatch, tmp_path):
    # train_mapper.py device=cuda failed in torch.cuda.set_device: "Expected a torch.device with a specified index".
    def strict_set_device(device):
        if isinstance(device, torch.device) and device.index is None:
            raise ValueError("Expected a torch.device with a specified index or an integer")

    seen = {}

    class Stop(Exception):
        pass

    def trainer(cfg, env):
        seen["device"] = resolve_device(cfg.device, env.local_rank)
        raise Stop

    monkeypatch.setattr(torch.cuda, "set_device", strict_set_device)
    monkeypatch.setattr(training, "MapperTrainer", trainer)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)  # set on CUDA: restored afterwards
    monkeypatch.setenv("LOCAL_RANK", "0")
    cfg = training.TrainMapperConfig(manifest="m.jsonl", latents=str(tmp_path), device="cuda", out=str(tmp_path))
    with pytest.raises(Stop):
        training.train_mapper(cfg)
    assert seen["device"] == torch.device("cuda", 0)


def test_filtered_lrelu_backward_reads_nothing_on_the_host():
    # Meta tensors have no values: any host read (a Python ``if`` on a tensor, .item()) raises. Before, the clamp
    # shortcut of the backward read torch.aminmax on the host at every layer: a CUDA sync per layer per step.
    from stylegan3.filters import design_lowpass_filter
    from stylegan3.ops import filtered_lrelu

    f = design_lowpass_filter(numtaps=6, cutoff=8, width=4, fs=32)
    x = torch.randn(2, 4, 12, 12, device="meta", requires_grad=True)
    b = torch.zeros(4, device="meta", requires_grad=True)
    y = filtered_lrelu(x, f.to("meta"), f.to("meta"), b, up=2, down=2, padding=5, clamp=256.0)
    y.sum().backward()
    assert x.grad.shape == x.shape and b.grad.shape == b.shape


def test_autocast_keeps_activations_in_the_autocast_dtype():
    # force_fp32 under autocast cast every layer's bf16 output back to float32 (a full read and write of the
    # activations per layer), which the next convolution cast to bf16 again. Counted here by the casts of
    # activation-sized tensors from bf16 to float32 in one forward of a small SG3-R plan.
    from torch.utils._python_dispatch import TorchDispatchMode

    from stylegan3.io import build

    class CountCasts(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.upcasts = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if func is torch.ops.aten._to_copy.default and args[0].dtype == torch.bfloat16:
                if out.dtype == torch.float32 and args[0].ndim == 4:
                    self.upcasts += 1
            return out

    torch.manual_seed(0)
    kwargs = {"z_dim": 8, "c_dim": 0, "w_dim": 8, "img_resolution": 16, "img_channels": 3, "channel_base": 128,
              "channel_max": 8, "mapping_kwargs": {"num_layers": 1}, "num_layers": 6, "num_critical": 1,
              "conv_kernel": 1, "use_radial_filters": True}  # fmt: skip
    G = build("stylegan3", kwargs).eval().requires_grad_(False)
    ws = G.mean_w(n=10)[None].repeat(2, 1, 1) + 0.3 * torch.randn(2, G.num_ws, G.w_dim)
    reference = G.synthesis(ws, force_fp32=True)
    with torch.autocast("cpu", dtype=torch.bfloat16), CountCasts() as counter:
        image = G.synthesis(ws, force_fp32=True)
    assert counter.upcasts <= 1, counter.upcasts  # at most the final image (before: one per layer, 8 here)
    err = (image.float() - reference).abs().max() / reference.std()
    assert err < 0.1, err  # still the same image at bf16's precision


def test_lpips_term_is_float32_and_the_target_runs_once():
    from inversion.losses import InversionLoss, LossWeights
    from inversion.perceptual import LPIPS

    torch.manual_seed(0)
    lpips = LPIPS(_random_backbone=True)
    x, y = torch.rand(2, 3, 64, 64) * 2 - 1, torch.rand(2, 3, 64, 64) * 2 - 1
    # Our forward is the lpips package's distance, computed by its own code.
    torch.testing.assert_close(lpips(x, y), lpips.net(x, y).reshape(2), rtol=1e-5, atol=1e-7)
    calls = []
    lpips.net.net.register_forward_hook(lambda module, args, out: calls.append(args[0].shape[0]))
    loss = InversionLoss(LossWeights(id=0), lpips=lpips)
    w = torch.zeros(2, 4, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        features = loss.target_features(y)
        calls.clear()
        _, terms = loss(x, y, w, features)
        assert len(calls) == 1  # only the image went through AlexNet: the target's features were reused
        _, again = loss(x, y, w)
    assert all(value.dtype == torch.float32 for value in terms.values()), {k: v.dtype for k, v in terms.items()}
    torch.testing.assert_close(terms["lpips"], again["lpips"])
    # bf16 trunk, float32 reduction: near the fp32 value, and 0 for the target itself.
    torch.testing.assert_close(terms["lpips"], lpips(x, y), rtol=0.05, atol=1e-3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _, same = loss(y, y, w, features)
    assert same["lpips"].abs().max() == 0


def test_benchmark_syncs_and_measures_the_device_it_times(monkeypatch):
    # On cuda:1 the benchmark synchronised and read the memory of the current device (GPU 0).
    from stylegan3.bench import time_and_peak

    calls = []
    for name in ("synchronize", "reset_peak_memory_stats", "memory_allocated", "max_memory_allocated"):
        monkeypatch.setattr(torch.cuda, name, lambda device=None, _n=name: calls.append((_n, device)) or 0)
    time_and_peak(lambda: None, torch.device("cuda", 1))
    assert calls and all(device == torch.device("cuda", 1) for _, device in calls), calls


def test_compiled_inversion_never_runs_the_compiled_network_without_grad(monkeypatch):
    # torch.compile guards on the grad mode: the final no-grad pass through the compiled network compiled a second
    # graph (minutes at 1024) for one forward. Counted here with a stand-in for the compiled view.
    from inversion import inverter
    from inversion.inverter import InverterOptions, invert
    from inversion.losses import InversionLoss, LossWeights
    from stylegan3.io import build

    torch.manual_seed(0)
    kwargs = {"z_dim": 8, "c_dim": 0, "w_dim": 8, "img_resolution": 16, "img_channels": 3, "channel_base": 128,
              "channel_max": 8, "mapping_kwargs": {"num_layers": 1}, "num_layers": 2, "num_critical": 1}  # fmt: skip
    G = build("stylegan3", kwargs).eval().requires_grad_(False)
    grad_modes = []

    class Counting:
        def __init__(self, G):
            self.G = G

        def __getattr__(self, name):
            return getattr(self.G, name)

        @property
        def synthesis(self):
            def run(*args, **kw):
                grad_modes.append(torch.is_grad_enabled())
                return self.G.synthesis(*args, **kw)

            return run

    monkeypatch.setattr(inverter, "compiled_synthesis", Counting)
    loss = InversionLoss(LossWeights(lpips=0, id=0))
    target = torch.rand(2, 3, 16, 16) * 2 - 1
    result = invert(G, target, loss, InverterOptions(steps=3, compile=True, joint_pass=True))
    assert grad_modes == [True] * 3 and result.w_plus.shape == (2, G.num_ws, G.w_dim)


def test_the_page_sets_up_its_device_as_reenact_does(monkeypatch, tmp_path):
    # The web page used to skip init_distributed: on CUDA no cuDNN benchmark mode, unlike reenact.py.
    from reenactment import app
    from reenactment.app import AppConfig, Reenactment

    calls = []
    monkeypatch.setattr(app, "init_distributed", lambda device, env: calls.append((device, env.world)))
    Reenactment(AppConfig(network=["g"], mapper=["m"], device="cpu"), tmp_path)
    assert calls == [(torch.device("cpu"), 1)]
