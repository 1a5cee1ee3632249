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

Two forms of one function. :meth:`FrequencyMixer.plain_forward` computes the mixer as
written above, as the authors' code does; training, gradients, CUDA and autocast always
run it. CPU float32 inference without gradients runs a faster form by default
(:mod:`ipv2.models.ffm_fast`: channels-last where it pays, folded projections, the
Fourier branch on real planes, Winograd 3x3 convolutions from 64 input channels
(:mod:`ipv2.models.winograd`); same weights), one image at a time. One image at a time
because the network is not continuous everywhere: the phase branch takes ``atan2`` of
each spectrum bin, which jumps by 2*pi where a bin's real part is negative and its
imaginary part crosses zero, so at such a bin any change of summation order (another
batch size, another library) moves the output: the plain form by up to 25 HU between
batch 1 and 4 on a barely trained test model (Testing/test_inference.py), about 0.1 HU
between 1 and 2 threads on one trained 400 steps on the demo phantom. Computed alone, a slice's arithmetic does not depend on its
batch, and on two CPU cores batch 1 is also the fastest at 256 and 512 px
(``ipv2 bench model``, ``ipv2 bench denoise``). ``FFM.set_fast(False)`` selects the
plain form for inference too (``ipv2 bench model`` times both side by side).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ipv2.models.common import ResBlock, Upsample, group_norm
from ipv2.models.ffm_fast import block_fast_forward, mixer_fast_forward, wants_channels_last
from ipv2.models.layouts import to_layout
from ipv2.models.unet import UNet
from ipv2.models.winograd import upsample_conv3x3


def fast_path_applies(x: Tensor) -> bool:
    """CPU float32 inference without autocast: where the fast form is exact and faster."""
    return (
        x.device.type == "cpu"
        and x.dtype == torch.float32
        and not torch.is_grad_enabled()
        and not torch.is_autocast_enabled("cpu")
    )


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

    fast = True  # CPU float32 inference runs the fast form (see the module docstring)

    def forward(self, x: Tensor) -> Tensor:
        if self.fast and fast_path_applies(x) and x.shape[-1] % 2 == 0 and x.shape[-2] % 2 == 0:
            return mixer_fast_forward(self, x)
        return self.plain_forward(x)

    def plain_forward(self, x: Tensor) -> Tensor:
        """The mixer as method.md describes it; training and non-CPU devices run this."""
        x_high, x_low = torch.split(x, [self.n_high, x.shape[1] - self.n_high], dim=1)
        s = torch.cat([self.high(x_high), self.low(x_low)], dim=1)
        s = self.fuse_proj(s + self.fuse_dw(s))
        # FFTs in float32: half-precision cuFFT only handles power-of-two sizes.
        spec = torch.fft.rfft2(x.float(), norm="ortho")
        mag = self.magnitude(spec.abs().to(x.dtype)).float()
        pha = self.phase(spec.angle().to(x.dtype)).float()
        f = torch.fft.irfft2(torch.polar(mag, pha), s=x.shape[-2:], norm="ortho").to(x.dtype)
        return x + self.project(torch.cat([s, f], dim=1))


def _row(value: Tensor | None, i: int, batch: int) -> Tensor | None:
    """Image ``i``'s entry of a per-image tensor; a shared (scalar) one as it is."""
    if not isinstance(value, Tensor) or value.ndim == 0 or value.shape[0] != batch:
        return value
    return value[i : i + 1]


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

    def set_fast(self, fast: bool) -> FFM:
        """The CPU inference form (True, the default) or the plain one (False)."""
        for module in self.modules():
            if isinstance(module, FrequencyMixer):
                module.fast = fast
        return self

    def forward(self, x: Tensor, t: Tensor | None = None, cond: Tensor | None = None) -> Tensor:
        if x.shape[0] > 1 and not self.training and fast_path_applies(x) and self._all_fast():
            # One image at a time: see the module docstring (batch-invariant and faster).
            return torch.cat(
                [
                    self.forward(x[i : i + 1], _row(t, i, x.shape[0]), _row(cond, i, x.shape[0]))
                    for i in range(x.shape[0])
                ]
            )
        return super().forward(x, t, cond).contiguous()

    def body(self, x: Tensor, temb: Tensor) -> Tensor:
        if self.training or not (fast_path_applies(x) and self._all_fast()):
            return super().body(x, temb)
        # Each block picks its layout (ipv2.models.layouts); the layers between blocks
        # keep the layout they are given.
        h = self.conv_in(x)
        hs = [h]
        for mod in self.down:
            h = block_fast_forward(mod, h, temb) if isinstance(mod, ResBlock) else mod(h)
            hs.append(h)
        for mod in self.mid:
            h = block_fast_forward(mod, h, temb)  # type: ignore[arg-type]
        for mod in self.up:
            if isinstance(mod, ResBlock):
                cl = wants_channels_last(mod)
                joined = torch.cat([to_layout(h, cl), to_layout(hs.pop(), cl)], dim=1)
                h = block_fast_forward(mod, joined, temb)
            elif isinstance(mod, Upsample):
                h = upsample_conv3x3(mod.conv, h)
            else:
                h = mod(h)
        return self.conv_out(nn.functional.silu(self.norm_out(h), inplace=True))

    def _all_fast(self) -> bool:
        return all(m.fast for m in self.modules() if isinstance(m, FrequencyMixer))
