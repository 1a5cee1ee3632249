"""FFM: the UNet of :mod:`ipv2.models.unet` with a frequency-decoupling mixer.

Every residual block's second 3x3 convolution becomes :class:`FrequencyMixer`
(method.md section 7): the channels split in half; one half goes through a
high-frequency branch (1x1 conv, depthwise 3x3, GELU), the other through a
low-frequency branch (2x2 average pool, 3x3 conv, GroupNorm, GELU, nearest x2); the two
are concatenated and fused by a depthwise 3x3 residual and a 1x1 projection. In parallel
a Fourier branch transforms the magnitude and phase of ``rfft2(x)`` with 1x1 conv,
LeakyReLU(0.1), 1x1 conv each and inverts. Spatial and Fourier outputs are concatenated,
projected by 1x1 and added to the mixer's input.

Parameter count: with this natural reading (Fourier convolutions C -> C, the halves'
widths C/2, biases everywhere), base 64, multipliers 1, 2, 4, 8 and 3 channels give
39.52 M parameters, 0.05% from the authors' 39.5 M (Testing/test_models.py checks it).

The low branch pools by 2 at the deepest level too, so FFM needs H and W divisible by
twice the UNet's stride.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ipv2.models.common import group_norm
from ipv2.models.unet import UNet


def _pointwise_mlp(channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(channels, channels, 1), nn.LeakyReLU(0.1), nn.Conv2d(channels, channels, 1)
    )


class FrequencyMixer(nn.Module):
    """Spatial high/low-frequency split plus a Fourier magnitude/phase branch."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.n_high = channels // 2
        n_low = channels - self.n_high
        h = self.n_high
        self.high = nn.Sequential(
            nn.Conv2d(h, h, 1), nn.Conv2d(h, h, 3, padding=1, groups=h), nn.GELU()
        )
        self.low = nn.Sequential(
            nn.AvgPool2d(2),
            nn.Conv2d(n_low, n_low, 3, padding=1),
            group_norm(n_low),
            nn.GELU(),
            nn.Upsample(scale_factor=2.0, mode="nearest"),
        )
        self.fuse_dw = nn.Conv2d(channels, channels, 3, padding=1, groups=channels)
        self.fuse_proj = nn.Conv2d(channels, channels, 1)
        self.magnitude = _pointwise_mlp(channels)
        self.phase = _pointwise_mlp(channels)
        self.project = nn.Conv2d(2 * channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        x_high, x_low = torch.split(x, [self.n_high, x.shape[1] - self.n_high], dim=1)
        s = torch.cat([self.high(x_high), self.low(x_low)], dim=1)
        s = self.fuse_proj(s + self.fuse_dw(s))
        # FFTs in float32: half-precision cuFFT only handles power-of-two sizes.
        spec = torch.fft.rfft2(x.float(), norm="ortho")
        mag = self.magnitude(spec.abs().to(x.dtype)).float()
        pha = self.phase(spec.angle().to(x.dtype)).float()
        f = torch.fft.irfft2(torch.polar(mag, pha), s=x.shape[-2:], norm="ortho").to(x.dtype)
        return x + self.project(torch.cat([s, f], dim=1))


class FFM(UNet):
    """The FM UNet with :class:`FrequencyMixer` as each residual block's second op."""

    arch = "ffm"

    def __init__(
        self,
        in_channels: int = 1,
        base: int = 64,
        mults: Sequence[int] = (1, 2, 4, 8),
        dropout: float = 0.1,
        cond_channels: int = 0,
    ) -> None:
        super().__init__(
            in_channels,
            base,
            mults,
            dropout=dropout,
            cond_channels=cond_channels,
            second=FrequencyMixer,
        )
        self.stride = 2 ** len(mults)
