"""ArcFace IR-SE50 identity network (the face recogniser of the pSp / e4e / PTI family) and the ID loss.

The backbone is the 50-layer "improved residual" ResNet with squeeze-and-excitation units (Deng et al.,
"ArcFace", 2019), as trained by InsightFace_Pytorch and shipped as ``model_ir_se50.pth``. Module and
parameter names follow that file's state dict so that it loads one to one:

- ``input_layer``: Conv 3x3 3->64 (no bias), BatchNorm2d, PReLU
- ``body.0`` .. ``body.23``: bottleneck IR-SE units in four stages (3, 4, 14, 3 units; 64, 128, 256,
  512 channels; the first unit of each stage has stride 2), each with
  ``shortcut_layer`` (MaxPool2d(1, stride) when the width stays, else Conv 1x1 + BatchNorm2d) and
  ``res_layer`` = BatchNorm2d, Conv 3x3, PReLU, Conv 3x3 (stride), BatchNorm2d, squeeze-excite
  (``res_layer.5.fc1`` / ``fc2``: 1x1 convs without bias, reduction 16)
- ``output_layer``: BatchNorm2d(512), Dropout, Flatten, Linear(512*7*7 -> 512), BatchNorm1d(512)

The embedding is L2-normalised. The weights have no stable public URL: put the file in the cache
(``$REENACT_CACHE/arcface/model_ir_se50.pth``) or pass its path.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import nn

from stylegan3 import WeightsFileError, fetch_weights
from stylegan3.io import read_state_dict

ARCFACE_FILE = "model_ir_se50.pth"
INPUT_SIZE = 112  # the backbone's input side, pixels
EMBEDDING_DIM = 512
# (output channels, units) per stage of the 50-layer network
STAGES_50: tuple[tuple[int, int], ...] = ((64, 3), (128, 4), (256, 14), (512, 3))

# The pSp / e4e IDLoss preprocessing for FFHQ-aligned faces: pool to 256, keep the inner face, pool to 112.
CROP_SIZE = 256
CROP_ROWS = (35, 223)
CROP_COLS = (32, 220)


class SqueezeExcite(nn.Module):
    """Channel gating: global average -> 1x1 conv (C -> C/r) -> ReLU -> 1x1 conv (C/r -> C) -> sigmoid -> scale."""

    def __init__(
        self,
        channels: int,  # feature channels C
        reduction: int = 16,  # bottleneck ratio r
    ) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, channels // reduction, kernel_size=1, bias=False)
        self.fc2 = nn.Conv2d(channels // reduction, channels, kernel_size=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[N, C, H, W] -> [N, C, H, W]."""
        gate = self.fc2(F.relu(self.fc1(x.mean(dim=(2, 3), keepdim=True))))
        return x * torch.sigmoid(gate)


class BottleneckIRSE(nn.Module):
    """Improved-residual unit with squeeze-excite: BN-Conv-PReLU-Conv-BN-SE plus a (strided) shortcut."""

    def __init__(
        self,
        in_channels: int,  # input channels
        out_channels: int,  # output channels ("depth")
        stride: int,  # 2 for the first unit of a stage, else 1
    ) -> None:
        super().__init__()
        self.in_channels, self.out_channels, self.stride = in_channels, out_channels, stride
        if in_channels == out_channels:
            self.shortcut_layer: nn.Module = nn.MaxPool2d(1, stride)  # pure subsampling, no parameters
        else:
            self.shortcut_layer = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )
        self.res_layer = nn.Sequential(
            nn.BatchNorm2d(in_channels),
            nn.Conv2d(in_channels, out_channels, 3, 1, 1, bias=False),
            nn.PReLU(out_channels),
            nn.Conv2d(out_channels, out_channels, 3, stride, 1, bias=False),
            nn.BatchNorm2d(out_channels),
            SqueezeExcite(out_channels, 16),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[N, in, H, W] -> [N, out, H / stride, W / stride]."""
        return self.res_layer(x) + self.shortcut_layer(x)

    def extra_repr(self) -> str:
        return f"in={self.in_channels}, out={self.out_channels}, stride={self.stride}"


class IRSE50(nn.Module):
    """ArcFace IR-SE50 backbone: [N, 3, 112, 112] face crops in [-1, 1] -> [N, 512] unit-norm embeddings.

    With the default stages: 43,797,696 parameters; 397 state-dict entries (343 without BatchNorm's
    ``num_batches_tracked``). Other ``stages`` give small networks of the same design, for tests.
    """

    def __init__(
        self,
        stages: tuple[tuple[int, int], ...] = STAGES_50,  # (channels, units) per stride-2 stage; tests shrink it
        embedding_dim: int = EMBEDDING_DIM,  # output width
        drop_ratio: float = 0.6,  # dropout before the embedding layer (pSp's IDLoss setting; inactive in eval)
    ) -> None:
        super().__init__()
        self.stages = tuple(tuple(s) for s in stages)
        self.embedding_dim = embedding_dim
        stem = self.stages[0][0]  # the stem is as wide as the first stage (64 in IR-SE50)
        self.input_layer = nn.Sequential(
            nn.Conv2d(3, stem, 3, 1, 1, bias=False),
            nn.BatchNorm2d(stem),
            nn.PReLU(stem),
        )
        units = []
        in_channels = stem
        for out_channels, num_units in self.stages:
            for i in range(num_units):
                units.append(BottleneckIRSE(in_channels, out_channels, stride=2 if i == 0 else 1))
                in_channels = out_channels
        self.body = nn.Sequential(*units)
        side = -(-INPUT_SIZE // 2 ** len(self.stages))  # 112 -> 7 after four stride-2 stages
        self.output_layer = nn.Sequential(
            nn.BatchNorm2d(in_channels),
            nn.Dropout(drop_ratio),
            nn.Flatten(),
            nn.Linear(in_channels * side * side, embedding_dim),
            nn.BatchNorm1d(embedding_dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[N, 3, 112, 112] float in [-1, 1] (RGB) -> [N, embedding_dim] L2-normalised embeddings."""
        if x.ndim != 4 or tuple(x.shape[1:]) != (3, INPUT_SIZE, INPUT_SIZE):
            raise ValueError(f"IRSE50 expects [N, 3, {INPUT_SIZE}, {INPUT_SIZE}] input, got {tuple(x.shape)}")
        x = self.output_layer(self.body(self.input_layer(x)))
        return F.normalize(x, dim=1)

    def extra_repr(self) -> str:
        return f"stages={self.stages}, embedding_dim={self.embedding_dim}"


def _load_state_strict(model: nn.Module, state: object, source: str) -> None:
    """Put ``state`` into ``model`` key by key; missing, unexpected or mis-shaped entries are errors.

    The tensors are assigned, not copied, so ``model`` may live on the meta device (no wasted random
    init); floating-point entries become float32. BatchNorm's ``num_batches_tracked`` counters may be
    absent (files saved before PyTorch 0.4.1 lack them; evaluation does not use them): they become 0.
    """
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsFileError(source, f"expected a state dict of tensors, got {type(state).__name__}")
    own = model.state_dict()
    missing = sorted(k for k in own.keys() - state.keys() if not k.endswith("num_batches_tracked"))
    unexpected = sorted(state.keys() - own.keys())
    misshaped = [
        f"{k} {tuple(state[k].shape)} (expected {tuple(own[k].shape)})"
        for k in own
        if k in state and tuple(state[k].shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or misshaped:
        problems = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped)):
            if keys:
                shown = ", ".join(keys[:8]) + (f", ... ({len(keys)} in all)" if len(keys) > 8 else "")
                problems.append(f"{label}: {shown}")
        raise WeightsFileError(source, "weights do not match the IR-SE50 network; " + "; ".join(problems))
    full = {k: state[k] if k in state else torch.zeros((), dtype=torch.long) for k in own}
    full = {k: v.float() if v.is_floating_point() else v for k, v in full.items()}
    model.load_state_dict(full, strict=True, assign=True)


def stages_of_state(state: dict[str, torch.Tensor]) -> tuple[tuple[tuple[int, int], ...], int]:
    """The (channels, units) stages and the embedding width of an IR-SE state dict (``STAGES_50`` and 512 for
    ``model_ir_se50.pth``): units are ``body.<i>``, a stage is a run of units of one width. Falls back to the
    IR-SE50 layout when the keys are not there (the strict load then names what is missing)."""
    widths = []
    while f"body.{len(widths)}.res_layer.1.weight" in state:
        widths.append(int(state[f"body.{len(widths)}.res_layer.1.weight"].shape[0]))
    embedding = state.get("output_layer.3.weight")
    if not widths or embedding is None or embedding.ndim != 2:
        return STAGES_50, EMBEDDING_DIM
    stages: list[list[int]] = []
    for width in widths:
        if stages and stages[-1][0] == width:
            stages[-1][1] += 1
        else:
            stages.append([width, 1])
    return tuple((c, n) for c, n in stages), int(embedding.shape[0])


def load_arcface(path: str | os.PathLike | None = None, device: torch.device | str = "cpu") -> IRSE50:
    """The pretrained IR-SE50 in eval mode with frozen parameters.

    ``path``: an explicit ``model_ir_se50.pth``; else ``$REENACT_CACHE/arcface/model_ir_se50.pth``
    (no download URL is known; ``stylegan3.WeightsNotFoundError`` says where to put the file).
    The file is read with ``torch.load(weights_only=True)`` and loaded strictly, key by key, into the network
    its stages describe (``stages_of_state``: IR-SE50 for the published file; tests write tiny ones).
    """
    file = fetch_weights(ARCFACE_FILE, "arcface", url=None, path=path, what="ArcFace IR-SE50 weights")
    state = read_state_dict(file)
    stages, embedding_dim = stages_of_state(state) if isinstance(state, dict) else (STAGES_50, EMBEDDING_DIM)
    with torch.device("meta"):
        model = IRSE50(stages, embedding_dim)
    _load_state_strict(model, state, str(file))
    model.requires_grad_(False)
    return model.eval().to(device)


def arcface_crop(images: torch.Tensor) -> torch.Tensor:
    """The pSp / e4e ID-loss preprocessing: [N, 3, S, S] float in [-1, 1] -> [N, 3, 112, 112] in [-1, 1].

    Average-pools to 256x256 (when S != 256), keeps rows 35:223 and columns 32:220, and average-pools
    that 188x188 window to 112x112. The window holds brows, eyes, nose and mouth only for faces aligned
    the FFHQ way (``reenactment.faces.align.align_face``); other framings need their own crop. Differentiable.
    """
    if images.ndim != 4 or images.shape[1] != 3 or images.shape[2] != images.shape[3]:
        raise ValueError(f"expected square [N, 3, S, S] images, got {tuple(images.shape)}")
    if images.shape[2] != CROP_SIZE:
        images = F.adaptive_avg_pool2d(images, (CROP_SIZE, CROP_SIZE))
    face = images[:, :, CROP_ROWS[0] : CROP_ROWS[1], CROP_COLS[0] : CROP_COLS[1]]
    return F.adaptive_avg_pool2d(face, (INPUT_SIZE, INPUT_SIZE))


class IdentityEncoder(nn.Module):
    """R in the thesis's ID loss: FFHQ-aligned [N, 3, S, S] images in [-1, 1] -> [N, 512] unit-norm embeddings.

    Wraps a frozen IR-SE50 and applies ``arcface_crop`` first. Always in eval mode (``train()`` is a
    no-op): BatchNorm statistics and dropout must not change a loss network. Gradients flow to the images.
    """

    def __init__(self, backbone: IRSE50) -> None:
        super().__init__()
        self.backbone = backbone
        self.backbone.requires_grad_(False)
        super().train(False)

    @classmethod
    def from_pretrained(
        cls, path: str | os.PathLike | None = None, device: torch.device | str = "cpu"
    ) -> IdentityEncoder:
        """Build from ``model_ir_se50.pth`` (see ``load_arcface``)."""
        return cls(load_arcface(path, device=device))

    def train(self, mode: bool = True) -> IdentityEncoder:
        return super().train(False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """[N, 3, S, S] float in [-1, 1], FFHQ-aligned -> [N, 512] L2-normalised embeddings."""
        return self.backbone(arcface_crop(images))


def identity_distance(embedding_x: torch.Tensor, embedding_y: torch.Tensor) -> torch.Tensor:
    """1 - cos between unit-norm embeddings: [N, D] x [N, D] (or [1, D], broadcast) -> [N] in [0, 2]."""
    return 1.0 - (embedding_x * embedding_y).sum(dim=1)


def identity_loss(x: torch.Tensor, y: torch.Tensor, encoder: IdentityEncoder) -> torch.Tensor:
    """The thesis's ID term per image, 1 - cos(R(x), R(y)): [N, 3, S, S] x [N, 3, S, S] in [-1, 1] -> [N] in [0, 2].

    For a fixed target, compute ``encoder(y)`` once and use ``identity_distance`` instead.
    """
    if x.shape != y.shape:
        raise ValueError(f"image batches differ in shape: {tuple(x.shape)} vs {tuple(y.shape)}")
    return identity_distance(encoder(x), encoder(y))
