"""The ground-truth chest phantom: determinism, breathing, masks, noise, looks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from ipv2.core.errors import InputError
from ipv2.phantom import PhantomCase, make_phantom
from ipv2.phantom.export import montage, write_png


@pytest.fixture(scope="module")
def case() -> PhantomCase:
    return make_phantom(size=128, slices=8, seed=0)


def test_same_seed_same_arrays_other_seed_differs(case: PhantomCase) -> None:
    again = make_phantom(size=128, slices=8, seed=0)
    for name in ("clean_ref", "clean_ld", "ndct", "uldct"):
        np.testing.assert_array_equal(getattr(again, name).array, getattr(case, name).array)
    other = make_phantom(size=128, slices=8, seed=1)
    assert np.abs(other.clean_ref.array - case.clean_ref.array).mean() > 5


def test_phases_differ_only_by_the_returned_deformation(case: PhantomCase) -> None:
    ref, ld, disp = case.clean_ref.array, case.clean_ld.array, case.displacement
    moved = np.hypot(disp[0], disp[1])
    assert 1.0 < moved.max() < 8.0, "breathing should move anatomy by a few pixels"
    # Where nothing moves (the table and the air around it), the phases are identical.
    still = ndimage.binary_erosion(moved < 1e-9, iterations=3, structure=np.ones((1, 3, 3)))
    assert still.sum() > 1000
    np.testing.assert_array_equal(ld[still], ref[still])
    # Warping clean_ref by the displacement explains clean_ld: the residual is a small
    # fraction of the raw difference (what remains is interpolation at sharp edges).
    warped = np.empty_like(ref)
    yy, xx = np.meshgrid(np.arange(ref.shape[1]), np.arange(ref.shape[2]), indexing="ij")
    for k in range(ref.shape[0]):
        coords = np.stack([yy + disp[0, k], xx + disp[1, k]])
        warped[k] = ndimage.map_coordinates(ref[k], coords, order=1, mode="nearest")
    raw = np.abs(ld - ref).mean()
    residual = np.abs(ld - warped).mean()
    assert raw > 10
    assert residual < 0.35 * raw, (residual, raw)


def test_masks_are_consistent_with_hu(case: PhantomCase) -> None:
    for masks, clean in ((case.masks_ref, case.clean_ref), (case.masks_ld, case.clean_ld)):
        assert not (masks.lung & ~masks.body).any()
        assert not (masks.background & masks.body).any()
        assert masks.lung.any() and masks.body.any()
        core_lung = ndimage.binary_erosion(masks.lung, structure=np.ones((1, 3, 3)), iterations=2)
        assert np.median(clean.array[core_lung]) == pytest.approx(-850, abs=40)
        bg = ndimage.binary_erosion(masks.background, structure=np.ones((1, 3, 3)), iterations=2)
        assert np.all(clean.array[bg] == -1000)
        tissue = masks.body & ~ndimage.binary_dilation(masks.lung, iterations=2)
        assert np.median(clean.array[tissue]) > -150


def test_uldct_lung_noise_is_several_times_ndct(case: PhantomCase) -> None:
    core = ndimage.binary_erosion(
        case.masks_ref.lung & case.masks_ld.lung, structure=np.ones((1, 3, 3)), iterations=3
    )
    # Noise = scan minus its own noise-free truth, inside lung that both phases share.
    ld_noise = (case.uldct.array - case.clean_ld.array)[core].std()
    nd_noise = (case.ndct.array - case.clean_ref.array)[core].std()
    assert ld_noise > 3 * nd_noise, (ld_noise, nd_noise)


def test_geometry_is_physical(case: PhantomCase) -> None:
    assert case.uldct.spacing == case.ndct.spacing
    assert case.uldct.spacing[0] == pytest.approx(400 / 128)
    assert case.uldct.grid_differences(case.ndct) == []


@pytest.mark.parametrize("kwargs", [{"size": 31}, {"slices": 0}, {"uldct_dose": 0.0}])
def test_bad_parameters_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(InputError):
        make_phantom(**kwargs)  # type: ignore[arg-type]


def test_montage_is_saved_for_a_visual_check(case: PhantomCase, artifacts_dir: Path) -> None:
    big = make_phantom(size=256, slices=3, seed=0)
    image = montage(big)
    assert image.shape == (3 * 256, 4 * 256)
    path = write_png(artifacts_dir / "phantom_montage.png", image)
    assert path.stat().st_size > 10_000
    # Lung window: air darker than lung, lung darker than soft tissue.
    w = image[:256, 512:768]  # ndct column, first row
    m = big.masks_ref
    k = 0
    assert w[m.background[k]].mean() < w[m.lung[k]].mean() < w[m.body[k] & ~m.lung[k]].mean()
