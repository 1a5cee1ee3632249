"""The DDPM-style UNet of method.md section 7 (the FM network and the base of FFM).

Levels use channel multipliers of a base width; each level has one residual block on the
way down and two on the way up (the DDPM layout with ``num_res_blocks = 1``: up-paths
consume one extra skip per level), two blocks in the middle, stride-2 convolutions down,
nearest x2 + convolution up, no attention. The time embedding is sinusoidal + MLP.
``cond_channels`` extra input channels let a conditional scheme (CoreDiff) feed the
low-dose slice beside the current state; ``second`` lets FFM swap each block's second
convolution for its frequency mixer without duplicating this file.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ipv2.core.errors import InputError
from ipv2.models.common import (
    Downsample,
    Network,
    ResBlock,
    SecondOp,
    TimeEmbedding,
    Upsample,
    check_input,
    conv3x3,
    group_norm,
    time_tensor,
)


class UNet(Network):
    """DDPM UNet without attention; (B, C, H, W) + t (B,) -> (B, C, H, W)."""

    arch = "unet"

    def __init__(
        self,
        in_channels: int = 1,
        base: int = 64,
        mults: Sequence[int] = (1, 2, 4, 8),
        dropout: float = 0.1,
        cond_channels: int = 0,
        second: SecondOp | None = None,
    ) -> None:
        super().__init__()
        if in_channels < 1 or base < 1 or not mults or any(m < 1 for m in mults):
            raise InputError(
                f"UNet needs in_channels >= 1, base >= 1 and positive multipliers, got "
                f"in_channels={in_channels}, base={base}, mults={list(mults)}"
            )
        self.in_channels = in_channels
        self.cond_channels = cond_channels
        self.stride = 2 ** (len(mults) - 1)
        self.hparams = {
            "in_channels": in_channels,
            "base": base,
            "mults": [int(m) for m in mults],
            "dropout": float(dropout),
        }
        temb_dim = 4 * base
        self.time = TimeEmbedding(base, temb_dim)
        self.conv_in = conv3x3(in_channels + cond_channels, base)

        def block(cin: int, cout: int) -> ResBlock:
            return ResBlock(cin, cout, temb_dim, dropout=dropout, second=second)

        self.down = nn.ModuleList()
        skips = [base]
        ch = base
        for level, mult in enumerate(mults):
            cout = base * mult
            self.down.append(block(ch, cout))
            ch = cout
            skips.append(ch)
            if level < len(mults) - 1:
                self.down.append(Downsample(ch))
                skips.append(ch)
        self.mid = nn.ModuleList([block(ch, ch), block(ch, ch)])
        self.up = nn.ModuleList()
        for level in reversed(range(len(mults))):
            cout = base * mults[level]
            for _ in range(2):
                self.up.append(block(ch + skips.pop(), cout))
                ch = cout
            if level > 0:
                self.up.append(Upsample(ch))
        self.norm_out = group_norm(ch)
        self.conv_out = conv3x3(ch, in_channels)

    def forward(self, x: Tensor, t: Tensor | None = None, cond: Tensor | None = None) -> Tensor:
        check_input(x, self.in_channels, self.stride, name=type(self).__name__)
        if self.cond_channels:
            if cond is None or cond.shape[1] != self.cond_channels or cond.shape[2:] != x.shape[2:]:
                got = None if cond is None else tuple(cond.shape)
                raise InputError(
                    f"{type(self).__name__} needs a condition of {self.cond_channels} channel(s) "
                    f"of the input's size {tuple(x.shape[2:])}, got {got}"
                )
            x = torch.cat([x, cond.to(x.dtype)], dim=1)
        temb = self.time(time_tensor(t, x.shape[0], x.device)).to(x.dtype)
        return self.body(x, temb)

    def body(self, x: Tensor, temb: Tensor) -> Tensor:
        """The UNet proper, after inputs are joined and the time is embedded."""
        h = self.conv_in(x)
        hs = [h]
        for mod in self.down:
            h = mod(h, temb) if isinstance(mod, ResBlock) else mod(h)
            hs.append(h)
        for mod in self.mid:
            h = mod(h, temb)
        for mod in self.up:
            h = mod(torch.cat([h, hs.pop()], dim=1), temb) if isinstance(mod, ResBlock) else mod(h)
        return self.conv_out(nn.functional.silu(self.norm_out(h)))
