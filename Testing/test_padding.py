"""Scanner padding detection and the HU sanity check."""

from __future__ import annotations

import numpy as np
import pytest

from ipv2.core.errors import InputError
from ipv2.core.padding import check_ct_range, detect_padding
from ipv2.phantom import make_phantom


def _circle_outside(size: int) -> np.ndarray:
    c = np.arange(size) + 0.5 - size / 2
    yy, xx = np.meshgrid(c, c, indexing="ij")
    return yy**2 + xx**2 > (size / 2) ** 2


@pytest.mark.parametrize("value", [-2048.0, -3024.0, -1024.0])
def test_padded_circle_is_found(value: float) -> None:
    case = make_phantom(size=64, slices=2, seed=3, padding_value=value)
    report = detect_padding(case.uldct.array)
    expected = np.broadcast_to(_circle_outside(64), report.mask.shape)
    np.testing.assert_array_equal(report.mask, expected)
    assert report.values == (value, value)
    assert report.summary()["padding_values_hu"] == [value]


def test_no_padding_on_a_plain_noisy_slice() -> None:
    case = make_phantom(size=64, slices=2, seed=3)
    report = detect_padding(case.uldct.array)
    assert not report.found
    assert report.values == (None, None)


def test_clipped_air_pixels_are_not_padding() -> None:
    rng = np.random.default_rng(0)
    sl = np.clip(rng.normal(-1000, 40, (64, 64)), -1024, None).astype(np.float32)
    assert (sl == -1024).sum() > 50  # scattered clipped pixels exist
    assert not detect_padding(sl).found


def test_dtype_minimum_padding_is_found() -> None:
    sl = np.full((32, 32), -1000.0, np.float32)
    sl[:6, :] = -32768
    report = detect_padding(sl)
    assert report.mask[0, :6].all() and not report.mask[0, 6:].any()


def test_ct_range_accepts_phantom_and_refuses_non_ct() -> None:
    case = make_phantom(size=64, slices=1)
    check_ct_range(case.uldct.array)
    with pytest.raises(InputError, match="8-bit"):
        check_ct_range(np.random.default_rng(0).integers(0, 256, (1, 32, 32)))
    with pytest.raises(InputError, match="NaN"):
        bad = case.ndct.array.copy()
        bad[0, 0, 0] = np.nan
        check_ct_range(bad)
    with pytest.raises(InputError, match="units"):
        check_ct_range(case.ndct.array * 10)
