"""Winograd 3x3 convolutions (ipv2.models.winograd) against torch's own convolution."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from ipv2.models import winograd

torch.set_num_threads(1)


def _conv(cin: int, cout: int, seed: int = 0, **options: object) -> nn.Conv2d:
    torch.manual_seed(seed)
    conv = nn.Conv2d(cin, cout, 3, padding=1, **options)  # type: ignore[arg-type]
    with torch.no_grad():
        if conv.bias is not None:
            conv.bias.normal_()
    return conv


def _relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got - want).abs().max() / want.abs().max())


@pytest.mark.parametrize(
    ("batch", "cin", "cout", "height", "width", "channels_last"),
    [(1, 64, 64, 8, 8, False), (2, 96, 40, 6, 10, True), (1, 128, 256, 16, 12, False)],
)
def test_winograd_equals_a_direct_convolution(
    batch: int, cin: int, cout: int, height: int, width: int, channels_last: bool
) -> None:
    conv = _conv(cin, cout)
    x = torch.randn(batch, cin, height, width)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        want = conv(x)
        assert winograd.applies(conv, x)
        got = winograd.conv3x3(conv, x)
        upsampled = winograd.upsample_conv3x3(conv, x)
        want_upsampled = conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))
    assert got.shape == want.shape and upsampled.shape == want_upsampled.shape
    assert _relative_error(got, want) < 1e-5
    assert _relative_error(upsampled, want_upsampled) < 1e-5


@pytest.mark.parametrize(
    ("batch", "cin", "height", "width", "bias"),
    [(1, 64, 2, 2, True), (3, 64, 6, 2, False), (1, 64, 4, 8, True)],
)
def test_small_maps_sliced_inputs_and_no_bias(
    batch: int, cin: int, height: int, width: int, bias: bool
) -> None:
    conv = _conv(cin, 24, bias=bias)
    x = torch.randn(batch, 2 * cin, height, width)[:, ::2]  # a strided view
    with torch.no_grad():
        assert _relative_error(winograd.conv3x3(conv, x), conv(x)) < 1e-5
        up = conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))
        assert _relative_error(winograd.upsample_conv3x3(conv, x), up) < 1e-5


def test_bands_of_tile_rows_give_the_same_result(monkeypatch: pytest.MonkeyPatch) -> None:
    conv = _conv(64, 32)
    x = torch.randn(1, 64, 14, 8)  # 7 tile rows: bands of 2 leave a band of 1
    with torch.no_grad():
        whole = winograd.conv3x3(conv, x)
        whole_up = winograd.upsample_conv3x3(conv, x)  # 14 tile rows
        monkeypatch.setattr(winograd, "BAND_BYTES", 2 * 16 * 4 * (64 + 32) * 4)
        banded = winograd.conv3x3(conv, x)
        monkeypatch.setattr(winograd, "BAND_BYTES", 3 * 9 * 8 * (64 + 32) * 4)
        banded_up = winograd.upsample_conv3x3(conv, x)  # bands of 3 leave a band of 2
    # The same products per tile, grouped in other matrix products: rounding at most.
    assert _relative_error(banded, whole) < 1e-6
    assert _relative_error(banded_up, whole_up) < 1e-6


def test_a_changed_weight_is_transformed_again() -> None:
    conv = _conv(64, 16)
    x = torch.randn(1, 64, 8, 8)
    with torch.no_grad():
        bias = conv.bias.clone()[None, :, None, None]
        before = winograd.conv3x3(conv, x)
        conv.weight.mul_(2.0)  # in place: same storage, new version
        after = winograd.conv3x3(conv, x)
        conv.load_state_dict({"weight": -conv.weight, "bias": conv.bias})
        loaded = winograd.conv3x3(conv, x)
        conv.half().float()  # new tensors, rounded to half precision and back
        rounded, rounded_direct = winograd.conv3x3(conv, x), conv(x)
        conv.weight.data.mul_(0.5)  # through .data: invisible to the version counter
        winograd.clear()
        halved, halved_direct = winograd.conv3x3(conv, x), conv(x)
    assert _relative_error(after - bias, 2.0 * (before - bias)) < 1e-5
    assert _relative_error(loaded - bias, -(after - bias)) < 1e-5
    assert _relative_error(rounded, rounded_direct) < 1e-5  # stale: 2e-4
    assert _relative_error(halved, halved_direct) < 1e-5


def test_weights_made_in_inference_mode_are_transformed_uncached() -> None:
    with torch.inference_mode():
        conv = _conv(64, 16)
        x = torch.randn(1, 64, 6, 6)
        assert _relative_error(winograd.conv3x3(conv, x), conv(x)) < 1e-5
    assert conv not in winograd._weights


@pytest.mark.parametrize(
    ("options", "cin", "size", "grad"),
    [
        ({"stride": 2}, 64, 8, False),
        ({"groups": 64}, 64, 8, False),
        ({"dilation": 2, "padding": 2}, 64, 8, False),
        ({"padding_mode": "reflect"}, 64, 8, False),
        ({}, 32, 8, False),  # too narrow to pay
        ({}, 64, 7, False),  # odd size: no whole 2 x 2 tiles
        ({}, 64, 8, True),  # training: autograd needs torch's own convolution
        ({"padding": "same"}, 64, 8, False),
    ],
)
def test_other_convolutions_are_left_to_torch(
    options: dict[str, object], cin: int, size: int, grad: bool
) -> None:
    conv = nn.Conv2d(cin, 64, 3, **{"padding": 1, **options})  # type: ignore[arg-type]
    x = torch.randn(1, cin, size, size)
    with torch.set_grad_enabled(grad):
        assert not winograd.applies(conv, x)
        assert torch.equal(winograd.conv3x3(conv, x), conv(x))
        upsampled = conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))
        assert torch.equal(winograd.upsample_conv3x3(conv, x), upsampled)


class _Doubled(nn.Conv2d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 2.0 * super().forward(x)


def test_autocast_hooks_and_subclasses_are_left_to_torch() -> None:
    conv = _conv(64, 16)
    x = torch.randn(1, 64, 8, 8)
    with torch.no_grad():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert not winograd.applies(conv, x)
            assert winograd.conv3x3(conv, x).dtype == torch.bfloat16
        doubled = _Doubled(64, 16, 3, padding=1)
        assert torch.equal(winograd.conv3x3(doubled, x), doubled(x))
        handle = conv.register_forward_hook(lambda module, args, out: out.zero_())
        assert not winograd.conv3x3(conv, x).any()
        handle.remove()
        assert winograd.conv3x3(conv, x).any()
