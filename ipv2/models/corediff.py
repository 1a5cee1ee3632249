"""The CoreDiff restoration network (Gao et al. 2023), conditioned on the low-dose slice.

The state ``x_t`` is concatenated with the low-dose slice and, optionally, ``context``
neighbouring slices on each side (the "contextual" part of CoreDiff), so the network sees
the real input at every step and can correct drift. The error-modulation module (EMM)
recalibrates the time embedding from the state itself: at inference ``x_t`` is built from
the network's own imperfect predictions, so its actual content deviates from what step
``t`` implies; a small encoder of ``x_t`` produces a per-sample scale and shift for the
embedding, letting the network read "how far along" the image really is.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ipv2.core.errors import InputError
from ipv2.models.common import check_input, group_norm, time_tensor
from ipv2.models.unet import UNet


class ErrorModulation(nn.Module):
    """State encoder -> (scale, shift) applied to the time embedding."""

    def __init__(self, in_channels: int, width: int, temb_dim: int) -> None:
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1),
            group_norm(width),
            nn.SiLU(),
            nn.Conv2d(width, width, 3, stride=2, padding=1),
            group_norm(width),
            nn.SiLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.affine = nn.Linear(width, 2 * temb_dim)
        # Start as the identity so training begins from the plain time-conditioned UNet.
        nn.init.zeros_(self.affine.weight)
        nn.init.zeros_(self.affine.bias)

    def forward(self, x: Tensor, temb: Tensor) -> Tensor:
        scale, shift = self.affine(self.encoder(x)).chunk(2, dim=1)
        return temb * (1.0 + scale) + shift


class CoreDiffNet(UNet):
    """UNet over [x_t, low-dose slice (+ neighbours)] with error-modulated time embedding."""

    arch = "corediff"

    def __init__(
        self,
        in_channels: int = 1,
        base: int = 64,
        mults: Sequence[int] = (1, 2, 4, 8),
        dropout: float = 0.1,
        context: int = 0,
    ) -> None:
        if context < 0:
            raise InputError(f"CoreDiff context must be >= 0 neighbours each side, got {context}")
        cond = in_channels * (2 * context + 1)
        super().__init__(in_channels, base, mults, dropout, cond_channels=cond)
        self.context = context
        self.hparams["context"] = int(context)
        self.emm = ErrorModulation(in_channels, base, 4 * base)

    def forward(self, x: Tensor, t: Tensor | None = None, cond: Tensor | None = None) -> Tensor:
        check_input(x, self.in_channels, self.stride, name=type(self).__name__)
        if cond is None or cond.shape[1] != self.cond_channels or cond.shape[2:] != x.shape[2:]:
            got = None if cond is None else tuple(cond.shape)
            raise InputError(
                f"CoreDiffNet needs a condition of {self.cond_channels} channel(s) (the low-dose "
                f"slice and {self.context} neighbour(s) each side) of size {tuple(x.shape[2:])}, "
                f"got {got}"
            )
        temb = self.time(time_tensor(t, x.shape[0], x.device)).to(x.dtype)
        temb = self.emm(x, temb)
        return self.body(torch.cat([x, cond.to(x.dtype)], dim=1), temb)
