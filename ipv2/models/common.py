"""Building blocks shared by the networks: time embedding, residual blocks, resampling.

Every network in :mod:`ipv2.models` maps (B, C, H, W) to (B, C, H, W) and takes the time
as a float tensor ``t`` of shape (B,) in [0, 1], where 0 is the low-dose image and 1 the
normal-dose image (method.md section 7). Keeping one calling convention lets the schemes
in :mod:`ipv2.schemes` drive any network without knowing which one it is.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from ipv2.core.errors import InputError

# DDPM feeds integer steps 0..1000 to the sinusoidal embedding; scaling t in [0, 1] by the
# same factor keeps the embedding's frequencies in the range that architecture was tuned for.
TIME_SCALE = 1000.0

# A factory building the module that replaces a residual block's second convolution.
SecondOp = Callable[[int], nn.Module]


def group_norm(channels: int, groups: int = 8) -> nn.GroupNorm:
    """GroupNorm(8) as method.md asks; falls back to fewer groups for tiny test widths."""
    g = math.gcd(groups, channels)
    return nn.GroupNorm(g, channels)


def sinusoidal_embedding(t: Tensor, dim: int) -> Tensor:
    """Transformer-style sin/cos features of ``t * TIME_SCALE`` (B,) -> (B, dim)."""
    half = dim // 2
    freqs = torch.exp(
        -math.log(10000.0)
        * torch.arange(half, device=t.device, dtype=torch.float32)
        / max(half - 1, 1)
    )
    args = (t.float() * TIME_SCALE)[:, None] * freqs[None, :]
    emb = torch.cat([torch.sin(args), torch.cos(args)], dim=1)
    if dim % 2:
        emb = nn.functional.pad(emb, (0, 1))
    return emb


class TimeEmbedding(nn.Module):
    """Sinusoidal features followed by a two-layer MLP (DDPM's time embedding)."""

    def __init__(self, base: int, dim: int) -> None:
        super().__init__()
        self.base = base
        self.mlp = nn.Sequential(nn.Linear(base, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: Tensor) -> Tensor:
        return self.mlp(sinusoidal_embedding(t, self.base))


def conv3x3(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, padding=1)


class ResBlock(nn.Module):
    """GN-SiLU-conv, + time projection, GN-SiLU-dropout-second op, plus a skip.

    ``second`` builds the module used in place of the second 3x3 convolution: the plain
    UNet passes a convolution, FFM passes its frequency-decoupling mixer.
    """

    def __init__(
        self, cin: int, cout: int, temb_dim: int, dropout: float, second: SecondOp | None = None
    ) -> None:
        super().__init__()
        self.norm1 = group_norm(cin)
        self.conv1 = conv3x3(cin, cout)
        self.temb = nn.Linear(temb_dim, cout)
        self.norm2 = group_norm(cout)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = second(cout) if second is not None else conv3x3(cout, cout)
        self.skip: nn.Module = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()
        self.act = nn.SiLU()

    def forward(self, x: Tensor, temb: Tensor) -> Tensor:
        h = self.conv1(self.act(self.norm1(x)))
        h = h + self.temb(self.act(temb))[:, :, None, None]
        h = self.conv2(self.dropout(self.act(self.norm2(h))))
        return self.skip(x) + h


class Downsample(nn.Module):
    """Stride-2 3x3 convolution (halves H and W)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Nearest-neighbour x2 then a 3x3 convolution."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = conv3x3(channels, channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(nn.functional.interpolate(x, scale_factor=2.0, mode="nearest"))


def check_input(x: Tensor, channels: int, stride: int, *, name: str) -> None:
    """Refuse inputs the network cannot map back to their own size, saying what to do."""
    if x.ndim != 4:
        raise InputError(
            f"{name} expects a (batch, channels, H, W) tensor, got shape {tuple(x.shape)}"
        )
    if x.shape[1] != channels:
        raise InputError(
            f"{name} was built for {channels} input channel(s), got {x.shape[1]}; "
            "build it with matching in_channels"
        )
    h, w = int(x.shape[2]), int(x.shape[3])
    if h % stride or w % stride:
        raise InputError(
            f"{name} needs H and W divisible by {stride} (its downsampling stride), got {h} x {w}; "
            f"pad or crop the slice to a multiple of {stride} (ipv2 pads automatically at inference)"
        )


def time_tensor(t: Tensor | float | None, batch: int, device: torch.device) -> Tensor:
    """Accept a scalar or per-sample time and return a float tensor of shape (B,)."""
    if t is None:
        return torch.zeros(batch, device=device)
    tt = torch.as_tensor(t, dtype=torch.float32, device=device)
    if tt.ndim == 0:
        tt = tt.expand(batch)
    return tt.reshape(batch)


class Network(nn.Module):
    """Base class: every network records its registry name and hyper-parameters.

    ``hparams`` is what :mod:`ipv2.io.checkpoints` writes to ``model.json`` and what the
    registry needs to rebuild the same architecture, so it holds JSON values only.
    ``stride`` is the factor H and W must be divisible by; ``cond_channels`` the number of
    conditioning channels (low-dose slice and neighbours) the network expects, 0 if none.
    """

    arch: str = ""
    stride: int = 1
    in_channels: int = 1
    cond_channels: int = 0
    hparams: dict[str, object]

    def forward(self, x: Tensor, t: Tensor | None = None, cond: Tensor | None = None) -> Tensor:
        raise NotImplementedError


def pad_to_stride(x: Tensor, stride: int) -> tuple[Tensor, int, int]:
    """Reflect-pad H and W up to multiples of ``stride``; returns the original size too."""
    h, w = int(x.shape[-2]), int(x.shape[-1])
    ph, pw = (-h) % stride, (-w) % stride
    if ph or pw:
        mode = "reflect" if ph < h and pw < w else "replicate"
        x = nn.functional.pad(x, (0, pw, 0, ph), mode=mode)
    return x, h, w
