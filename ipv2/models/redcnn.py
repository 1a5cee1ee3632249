"""A one-pass residual encoder-decoder CNN (RED-CNN class, Chen et al. 2017).

The fastest sane baseline: five 5x5 convolutions and five mirrored ones with residual
shortcuts from the input and from the encoder, stride 1 throughout. Padding keeps every
feature map at the slice's size (the original shrinks and regrows without padding), so
any H and W works and tiles need no cropping. No final ReLU: images live in [-1, 1].
It ignores the time input; trained with the regression scheme it is the weak denoiser
(Module 3) and the one-pass baseline.
"""

from __future__ import annotations

from torch import Tensor, nn

from ipv2.core.errors import InputError
from ipv2.models.common import Network, check_input


class REDCNN(Network):
    """Residual encoder-decoder CNN: (B, C, H, W) -> (B, C, H, W), any H and W."""

    arch = "redcnn"

    def __init__(self, in_channels: int = 1, width: int = 96, kernel: int = 5) -> None:
        super().__init__()
        if kernel % 2 == 0 or kernel < 1 or width < 1 or in_channels < 1:
            raise InputError(
                f"RED-CNN needs an odd kernel and positive widths, got kernel={kernel}, "
                f"width={width}, in_channels={in_channels}"
            )
        self.in_channels = in_channels
        self.stride = 1
        self.hparams = {"in_channels": in_channels, "width": width, "kernel": kernel}
        pad = kernel // 2

        def conv(cin: int, cout: int) -> nn.Conv2d:
            return nn.Conv2d(cin, cout, kernel, padding=pad)

        self.enc = nn.ModuleList(
            [conv(in_channels, width)] + [conv(width, width) for _ in range(4)]
        )
        self.dec = nn.ModuleList(
            [conv(width, width) for _ in range(4)] + [conv(width, in_channels)]
        )
        self.act = nn.ReLU()

    def forward(self, x: Tensor, t: Tensor | None = None, cond: Tensor | None = None) -> Tensor:
        check_input(x, self.in_channels, self.stride, name=type(self).__name__)
        e1 = self.act(self.enc[0](x))
        e2 = self.act(self.enc[1](e1))
        e3 = self.act(self.enc[2](e2))
        e4 = self.act(self.enc[3](e3))
        h = self.act(self.enc[4](e4))
        h = self.dec[0](h) + e4
        h = self.dec[1](self.act(h))
        h = self.dec[2](self.act(h)) + e2
        h = self.dec[3](self.act(h))
        return self.dec[4](self.act(h)) + x
