"""OpenCV and scipy binary operations agree, op by op and as whole masks; slice blocks
keep slices apart."""

from __future__ import annotations

from unittest import mock

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from skimage.morphology import disk

from ipv2.core.binary_ops import OpenCVOps, ScipyOps, backend, default_ops
from ipv2.phantom import make_phantom
from ipv2.purification import masks
from ipv2.purification.masks import MaskOptions, purification_masks
from ipv2.purification.slice_block import SliceBlock

CV = OpenCVOps()
SP = ScipyOps()

# fill=nothing draws every pixel, so the masks are dense patterns, not mostly one value.
masks2d = arrays(
    np.bool_,
    st.tuples(st.integers(1, 24), st.integers(1, 24)),
    elements=st.booleans(),
    fill=st.nothing(),
)
connectivities = st.sampled_from([4, 8])


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """Two label images describe the same components (numbering aside)."""
    if not np.array_equal(a > 0, b > 0):
        return False
    pairs = {(int(x), int(y)) for x, y in zip(a[a > 0], b[b > 0], strict=True)}
    return len(pairs) == len({p[0] for p in pairs}) == len({p[1] for p in pairs})


@settings(max_examples=60, deadline=None)
@given(mask=masks2d, radius=st.integers(1, 2))
def test_erode_and_dilate_agree(mask: np.ndarray, radius: int) -> None:
    fp = disk(radius).astype(bool)
    np.testing.assert_array_equal(CV.erode(mask, fp), SP.erode(mask, fp))
    np.testing.assert_array_equal(CV.dilate(mask, fp), SP.dilate(mask, fp))


@settings(max_examples=60, deadline=None)
@given(mask=masks2d, conn=connectivities)
def test_labels_and_border_components_agree(mask: np.ndarray, conn: int) -> None:
    (lc, nc), (ls, ns) = CV.label(mask, conn), SP.label(mask, conn)
    assert nc == ns and same_partition(np.asarray(lc), np.asarray(ls))
    np.testing.assert_array_equal(CV.border_connected(mask, conn), SP.border_connected(mask, conn))
    np.testing.assert_array_equal(CV.fill_holes(mask), SP.fill_holes(mask))


@settings(max_examples=60, deadline=None)
@given(
    mask=masks2d,
    conn=connectivities,
    seeds=st.lists(st.tuples(st.integers(0, 23), st.integers(0, 23)), max_size=6),
)
def test_seeded_components_agree(mask: np.ndarray, conn: int, seeds: list[tuple[int, int]]) -> None:
    h, w = mask.shape
    ys = np.array([y % h for y, _ in seeds], dtype=np.intp)
    xs = np.array([x % w for _, x in seeds], dtype=np.intp)
    (lc, sc), (ls, ss) = (
        CV.seeded(mask, ys, xs, connectivity=conn),
        SP.seeded(mask, ys, xs, connectivity=conn),
    )
    assert sc.size == ss.size and same_partition(np.asarray(lc), np.asarray(ls))
    assert sorted(sc.tolist()) == sorted(ss.tolist())
    np.testing.assert_array_equal(
        sc, np.bincount(np.asarray(lc).ravel(), minlength=sc.size) * (np.arange(sc.size) > 0)
    )
    full, _ = SP.label(mask, conn)
    wanted = np.isin(full, full[ys, xs][full[ys, xs] > 0])
    np.testing.assert_array_equal(np.asarray(lc) > 0, wanted)


def test_seeded_falls_back_past_255_components() -> None:
    mask = np.zeros((40, 40), bool)
    mask[::2, ::2] = True  # 400 isolated pixels
    ys, xs = np.nonzero(mask)
    labels, sizes = CV.seeded(mask, ys, xs, connectivity=4)
    count = sizes.size - 1
    assert count == 400 and np.array_equal(np.asarray(labels) > 0, mask)
    assert sizes[0] == 0 and (sizes[1:] == 1).all()
    flags = np.zeros(count + 1, bool)
    flags[1::2] = True
    np.testing.assert_array_equal(CV.select(flags, labels), SP.select(flags, labels))


def test_select_with_lut_and_take() -> None:
    labels = np.random.default_rng(0).integers(0, 200, (30, 30)).astype(np.int32)
    flags = np.random.default_rng(1).random(200) < 0.5
    np.testing.assert_array_equal(CV.select(flags, labels), flags[labels])


@settings(max_examples=30, deadline=None)
@given(
    stack=arrays(np.bool_, st.tuples(st.integers(1, 4), st.integers(2, 16), st.integers(2, 16))),
    radius=st.integers(1, 2),
)
def test_slice_blocks_keep_slices_apart(stack: np.ndarray, radius: int) -> None:
    """Eroding, dilating and labelling a tall block equals doing each slice alone."""
    k, h, w = stack.shape
    fp = disk(radius).astype(bool)
    block = SliceBlock(k, h, w, gap=radius)
    block.slices[...] = stack
    block.set_gaps(True)
    eroded = block.adopt(CV.erode(block.image, fp))
    block.set_gaps(False)
    dilated = block.adopt(CV.dilate(block.image, fp))
    labels, _ = CV.label(block.image, 4)
    for i in range(k):
        np.testing.assert_array_equal(eroded[i], SP.erode(stack[i], fp))
        np.testing.assert_array_equal(dilated[i], SP.dilate(stack[i], fp))
        assert same_partition(block.adopt(labels)[i], SP.label(stack[i], 4)[0])
    with pytest.raises(ValueError, match="spacer"):
        SliceBlock(1, 2, 2, gap=0)


images = arrays(
    np.float32,
    st.tuples(st.integers(1, 3), st.integers(12, 40), st.integers(12, 40)),
    elements=st.floats(-1100, 1500, width=32),
    fill=st.nothing(),
)


@settings(max_examples=40, deadline=None)
@given(
    u=images,
    variant=st.sampled_from(["paper", "reference"]),
    rule=st.sampled_from(["outside-body", "corners"]),
    conn=connectivities,
    radius=st.integers(0, 2),
)
def test_whole_masks_agree_on_random_images(
    u: np.ndarray, variant: str, rule: str, conn: int, radius: int
) -> None:
    opts = MaskOptions(
        variant=variant, background_rule=rule, connectivity=conn, opening_radius=radius
    )  # type: ignore[arg-type]
    n = np.roll(u, 3, axis=2)
    a = purification_masks(u, n, opts, mask_backend="opencv")
    b = purification_masks(u, n, opts, mask_backend="scipy")
    for name in ("lung", "background", "body", "common"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    np.testing.assert_array_equal(a.u.dark.thresholds, b.u.dark.thresholds)


@settings(max_examples=25, deadline=None)
@given(
    cells=arrays(
        np.float32,
        st.tuples(st.integers(2, 5), st.integers(3, 8), st.integers(3, 8)),
        elements=st.sampled_from([-1000.0, 50.0]),
        fill=st.nothing(),
    ),
    rule=st.sampled_from(["outside-body", "corners"]),
    variant=st.sampled_from(["paper", "reference"]),
)
def test_blocks_of_slices_give_the_masks_of_single_slices(
    cells: np.ndarray, rule: str, variant: str
) -> None:
    """Slices processed together in one tall block get exactly their one-slice masks."""
    stack = cells.repeat(3, axis=1).repeat(3, axis=2)  # blobs that survive the opening
    opts = MaskOptions(variant=variant, background_rule=rule, threshold_hu=-500.0)  # type: ignore[arg-type]
    n = stack[::-1].copy()
    with mock.patch.object(masks, "_blocks", lambda z: [(0, z)]):  # all slices in one block
        whole = purification_masks(stack, n, opts, detect=False)
    for k in range(stack.shape[0]):
        one = purification_masks(stack[k], n[k], opts, detect=False)
        for name in ("lung", "background", "body"):
            np.testing.assert_array_equal(getattr(one, name)[0], getattr(whole, name)[k])


@pytest.mark.parametrize("padding", [None, -2048.0])
def test_whole_masks_agree_on_the_phantom(padding: float | None) -> None:
    case = make_phantom(size=128, slices=3, seed=2, padding_value=padding)
    u, n = case.uldct.array, case.ndct.array
    for variant in ("paper", "reference"):
        a = purification_masks(u, n, MaskOptions(variant=variant), mask_backend="opencv")  # type: ignore[arg-type]
        b = purification_masks(u, n, MaskOptions(variant=variant), mask_backend="scipy")  # type: ignore[arg-type]
        for name in ("lung", "background", "body"):
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)


@pytest.mark.realdata
@pytest.mark.slow
def test_whole_masks_agree_on_real_ct(tcia_volume) -> None:  # type: ignore[no-untyped-def]
    a = tcia_volume.array[::3]
    fast = purification_masks(a, a, mask_backend="opencv")
    reference = purification_masks(a, a, mask_backend="scipy")
    for name in ("lung", "background", "body"):
        np.testing.assert_array_equal(getattr(fast, name), getattr(reference, name), err_msg=name)


def test_backend_choice() -> None:
    assert default_ops().name == "opencv"  # installed with the engine
    assert backend("scipy").name == "scipy" and backend(None) is default_ops()
    with pytest.raises(ValueError, match="mask backend"):
        backend("numba")
