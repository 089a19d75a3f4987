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
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)  # train_mapper sets it: restored afterwards
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
