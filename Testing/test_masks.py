"""Masks: properties on random images, Dice on the phantom, the two variants, real CT."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy import ndimage

from ipv2.core.errors import InputError
from ipv2.phantom import make_phantom
from ipv2.purification.masks import MaskOptions, dark_mask, otsu_thresholds, purification_masks


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * (a & b).sum() / (a.sum() + b.sum()))


@pytest.fixture(scope="module")
def phantom():  # type: ignore[no-untyped-def]
    return make_phantom(size=128, slices=4, seed=0)


def synthetic_chest(size: int = 96, table: bool = True, shift: int = 0) -> np.ndarray:
    """Air, an elliptic body with two lungs, optionally a hollow table enclosing air."""
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    c = size / 2
    img = np.full((size, size), -1000.0, np.float32)
    body = ((yy - c + 6) / (0.33 * size)) ** 2 + ((xx - c - shift) / (0.42 * size)) ** 2 < 1
    img[body] = 40.0
    for side in (-1, 1):
        lung = ((yy - c + 6) / (0.22 * size)) ** 2 + (
            (xx - c - shift - side * 0.2 * size) / (0.12 * size)
        ) ** 2 < 1
        img[lung] = -850.0
    if table:
        img[int(0.86 * size) : int(0.95 * size), 4 : size - 4] = 300.0  # hollow table
        img[int(0.88 * size) : int(0.93 * size), 8 : size - 8] = -1000.0
    noise = np.random.default_rng(size + shift).normal(0.0, 20.0, img.shape)
    return (img + noise).astype(np.float32)


images = arrays(
    np.float32,
    st.tuples(st.integers(1, 2), st.integers(12, 40), st.integers(12, 40)),
    elements=st.floats(-1100, 1500, width=32),
    fill=st.nothing(),  # every pixel drawn: dense images, not one value with a few others
)


@settings(max_examples=40, deadline=None)
@given(u=images, seed=st.integers(0, 3), variant=st.sampled_from(["paper", "reference"]))
def test_masks_binary_and_nested(u: np.ndarray, seed: int, variant: str) -> None:
    n = np.roll(u, seed, axis=2)
    m = purification_masks(u, n, MaskOptions(variant=variant))  # type: ignore[arg-type]
    for mask in (m.lung, m.background, m.body, m.common, m.u.dark.mask):
        assert mask.dtype == np.bool_ and mask.shape == u.shape
    assert not (m.background & m.body).any()
    assert not (m.lung & ~m.common).any()
    if variant == "paper":
        assert not (m.lung & ~m.body).any()
    assert set(np.unique(m.label_map())) <= {0, 1, 2}


@pytest.mark.parametrize("padding", [None, -1024.0, -2048.0, -3024.0])
def test_phantom_dice(phantom, padding) -> None:  # type: ignore[no-untyped-def]
    case = (
        phantom
        if padding is None
        else make_phantom(size=128, slices=4, seed=0, padding_value=padding)
    )
    m = purification_masks(case.uldct.array, case.ndct.array)
    true_lung = case.masks_ld.lung | case.masks_ref.lung
    true_bg = case.masks_ld.background & case.masks_ref.background
    assert dice(m.lung, true_lung) >= 0.95
    assert dice(m.background, true_bg) >= 0.98
    assert dice(m.u.background, case.masks_ld.background) >= 0.98
    assert dice(m.n.background, case.masks_ref.background) >= 0.98


def test_padding_kept_out_of_otsu(phantom) -> None:  # type: ignore[no-untyped-def]
    plain = otsu_thresholds(phantom.uldct.array)
    for value in (-2048.0, -3024.0):
        padded = make_phantom(size=128, slices=4, seed=0, padding_value=value)
        m = purification_masks(padded.uldct.array, padded.ndct.array)
        assert np.allclose(m.u.dark.thresholds, plain, atol=40.0)
        pad = padded.uldct.array == value
        assert pad.any() and m.background[pad].all()


def test_reference_variant_fails_with_bright_corner(phantom) -> None:  # type: ignore[no-untyped-def]
    u, n = phantom.uldct.array.copy(), phantom.ndct.array.copy()
    true_lung = phantom.masks_ld.lung | phantom.masks_ref.lung
    ref_ok = purification_masks(u, n, MaskOptions(variant="reference"))
    assert ref_ok.background.mean() > 0.4  # removes the outside air while (0, 0) is air
    for img in (u, n):
        img[:, :6, :6] = 400.0  # a bright object touching pixel (0, 0)
    paper = purification_masks(u, n, MaskOptions(variant="paper"))
    reference = purification_masks(u, n, MaskOptions(variant="reference"))
    assert dice(paper.lung, true_lung) >= 0.95
    assert paper.background.mean() > 0.4
    assert not reference.background.any()  # nothing removed
    assert reference.lung.mean() > 0.5  # the outside air is taken for lung
    assert dice(reference.lung, true_lung) < 0.5


def test_air_enclosed_by_table_is_background() -> None:
    img = synthetic_chest()
    table_air = np.zeros(img.shape, bool)
    table_air[int(0.88 * 96) : int(0.93 * 96), 10:86] = True
    default = purification_masks(img, img, detect=False)
    corners = purification_masks(img, img, MaskOptions(background_rule="corners"), detect=False)
    assert not default.lung[0][table_air].any() and default.background[0][table_air].all()
    assert corners.lung[0][table_air].all()  # the literal four-corner fill leaves it as lung
    _, count = ndimage.label(default.lung[0])
    assert count == 2


def test_body_touching_edge_and_no_lung_slices() -> None:
    wide = synthetic_chest(table=False)
    wide[:, :3] = 40.0  # body reaches the left edge
    wide[:, -3:] = 40.0
    chest = synthetic_chest(table=False)
    no_lung = np.where((chest > -930) & (chest < -770), 40.0, chest).astype(np.float32)
    blank = np.zeros_like(wide)
    stack = np.stack([wide, no_lung, blank])
    m = purification_masks(stack, stack, detect=False)
    _, count = ndimage.label(m.lung[0])
    assert count == 2 and m.background[0][0, 50] and m.background[0][-1, 50]
    assert not m.lung[1].any() and not m.lung[2].any()


def test_equally_large_bright_regions_keep_the_first_as_body() -> None:
    """A tie for largest bright component keeps the first in raster order (the left one)."""
    img = np.full((1, 9, 17), -1000.0, np.float32)
    img[0, 1:8, 1:8] = 50.0
    img[0, 1:8, 9:16] = 50.0
    img[0, 3:6, 3:6] = -1000.0  # a hole in each square
    img[0, 3:6, 11:14] = -1000.0
    opts = MaskOptions(threshold_hu=-500.0, opening_radius=0)
    for backend in ("opencv", "scipy"):
        m = purification_masks(img, img, opts, detect=False, mask_backend=backend)
        left_hole = np.zeros(img.shape, bool)
        left_hole[0, 3:6, 3:6] = True
        np.testing.assert_array_equal(m.lung, left_hole)
        assert m.body[0, 1:8, 1:8].all() and not m.body[0, 1:8, 9:16].any()


def test_connectivity_given_as_a_float_still_works() -> None:
    opts = MaskOptions(connectivity=8.0, opening_radius=1.0)  # type: ignore[arg-type]
    assert opts.connectivity == 8 and isinstance(opts.connectivity, int)
    img = synthetic_chest()
    assert purification_masks(img, img, opts, detect=False).lung.any()


def test_threshold_override_and_opening() -> None:
    img = synthetic_chest(table=False)
    img[20:22, 48] = -1000.0  # a single dark pixel inside the body: removed by the opening
    fixed = dark_mask(img, options=MaskOptions(threshold_hu=-900.0))
    assert np.all(fixed.thresholds == -900.0)
    assert not fixed.mask[0][img > -900].any()
    opened = dark_mask(img, options=MaskOptions(threshold_hu=-500.0))
    raw = dark_mask(img, options=MaskOptions(threshold_hu=-500.0, opening_radius=0))
    assert raw.mask[0, 20, 48] and not opened.mask[0, 20, 48]  # a 2-pixel speck
    assert opened.mask[0, 0, 0]  # border air survives the opening


def test_bad_input_is_refused() -> None:
    img = synthetic_chest()
    bad = img.copy()
    bad[3, 3] = np.nan
    with pytest.raises(InputError, match="NaN"):
        purification_masks(bad, img)
    with pytest.raises(InputError, match="empty"):
        purification_masks(np.zeros((0, 4, 4)), np.zeros((0, 4, 4)))
    with pytest.raises(InputError, match="shape"):
        purification_masks(img, img[:-1])
    with pytest.raises(InputError):
        MaskOptions(connectivity=6)
    with pytest.raises(InputError, match="slice 3"):
        otsu_thresholds(np.stack([img, img, img, bad]))


@pytest.mark.realdata
@pytest.mark.slow
def test_real_ct_masks(tcia_volume) -> None:  # type: ignore[no-untyped-def]
    a = tcia_volume.array
    m = purification_masks(a, a)
    assert m.background[:, [0, 0, -1, -1], [0, -1, 0, -1]].all()
    under_table = np.zeros(a.shape, bool)
    under_table[:, 470:, :] = True
    air = a < -900
    assert m.background[air & under_table].mean() > 0.99  # air under the table
    assert m.background[air & ~m.body].mean() > 0.999
    assert not (m.lung & ~m.body).any()
    for k in range(a.shape[0]):
        lung = m.lung[k]
        cols = np.flatnonzero(m.body[k].any(axis=0))
        mid = (cols[0] + cols[-1]) / 2
        left, right = lung[:, : int(mid)].sum(), lung[:, int(mid) :].sum()
        assert min(left, right) > 0.3 * max(left, right), k  # two lungs, one each side
        assert lung.mean() > 0.05


def test_each_slice_is_independent_of_the_others_in_the_stack() -> None:
    """A one-slice live preview must give the same masks as a whole-volume run."""
    case = make_phantom(size=96, slices=5, seed=7)
    whole = purification_masks(case.uldct.array, case.ndct.array)
    for k in range(5):
        single = purification_masks(case.uldct.array[k], case.ndct.array[k])
        np.testing.assert_array_equal(single.lung[0], whole.lung[k])
        np.testing.assert_array_equal(single.background[0], whole.background[k])
        np.testing.assert_array_equal(single.body[0], whole.body[k])
