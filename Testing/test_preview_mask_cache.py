"""The live preview's whole-volume mask cache (anatomical variant) on a real MRML scene.

The anatomical lung mask needs 3D connectivity, so the preview computes the volume's
masks once per (volume pair, options) and shows slice k from the cache; editing the
voxels or changing the options recomputes.
"""

from __future__ import annotations

import numpy as np
import pytest

from ipv2.core.volume import Volume
from ipv2.phantom import make_phantom
from ipv2.purification.masks import MaskOptions, purification_masks
from ipv2.slicer import node_from_volume, segment_array
from ipv2.slicer import workflows as wf
from ipv2.slicer.mask_cache import PREVIEW_CACHE, VolumeMaskCache
from ipv2.slicer.workflows import voxels

ANATOMICAL = MaskOptions(variant="anatomical")


@pytest.fixture(scope="module")
def case():  # type: ignore[no-untyped-def]
    return make_phantom(size=64, slices=6, seed=1)


def test_preview_shows_the_whole_volume_masks_and_computes_them_once(scene, case) -> None:  # type: ignore[no-untyped-def]
    u_node = node_from_volume(case.uldct, "uLDCT", scene)
    n_node = node_from_volume(case.ndct, "NDCT", scene)
    PREVIEW_CACHE.clear()
    whole = purification_masks(case.uldct.array, case.ndct.array, ANATOMICAL)
    first = wf.preview_slice(u_node, n_node, 2, options=ANATOMICAL)
    seg = first.segmentation
    for k in (2, 4, 0):
        wf.preview_slice(u_node, n_node, k, options=ANATOMICAL, segmentation=seg)
        # The slice of the 3D computation, not the single-slice 2D fallback.
        np.testing.assert_array_equal(segment_array(seg, "lung", u_node)[k], whole.lung[k])
    assert PREVIEW_CACHE.computed == 1
    # New options recompute; so does an edit of the voxels (the node reports Modified).
    wf.preview_slice(u_node, n_node, 2, options=MaskOptions(variant="anatomical", opening_radius=2))
    assert PREVIEW_CACHE.computed == 2
    vox = voxels(u_node)
    vox[:] = case.ndct.array  # in place, then Modified(), as a Slicer edit does
    u_node.GetImageData().GetPointData().GetScalars().Modified()
    u_node.Modified()
    wf.preview_slice(u_node, n_node, 2, options=ANATOMICAL, segmentation=seg)
    assert PREVIEW_CACHE.computed == 3
    on_ndct = purification_masks(case.ndct.array, case.ndct.array, ANATOMICAL)
    np.testing.assert_array_equal(segment_array(seg, "lung", u_node)[2], on_ndct.lung[2])


def test_the_paper_variant_still_previews_one_slice(scene, case) -> None:  # type: ignore[no-untyped-def]
    u_node = node_from_volume(case.uldct, "uLDCT", scene)
    PREVIEW_CACHE.clear()
    preview = wf.preview_slice(u_node, None, 3, options=MaskOptions())
    one = purification_masks(case.uldct.array[3], case.uldct.array[3])
    np.testing.assert_array_equal(
        segment_array(preview.segmentation, "lung", u_node)[3], one.lung[0]
    )
    assert PREVIEW_CACHE.computed == 0


def test_a_failed_computation_leaves_no_stale_entry() -> None:
    cache = VolumeMaskCache()

    def boom():  # type: ignore[no-untyped-def]
        raise ValueError("no voxels")

    with pytest.raises(ValueError):
        cache.get("a", boom)
    assert cache.computed == 0


def test_masks_for_all_slices_use_the_whole_volume_for_the_anatomical_variant(scene) -> None:  # type: ignore[no-untyped-def]
    """Chunks of a few slices would cut the 3D connectivity the variant relies on: in a
    chunk below the lungs the bowel gas is the largest air and was kept as lung."""
    y, x = np.ogrid[:64, :64]
    vol = np.full((8, 64, 64), -1000.0, dtype=np.float32)
    vol[:, ((y - 32) / 20) ** 2 + ((x - 32) / 27) ** 2 <= 1] = 40.0
    for cx in (19, 45):
        vol[:4, ((y - 30) / 12) ** 2 + ((x - cx) / 8) ** 2 <= 1] = -850.0
    gas = ((y - 40) / 4) ** 2 + ((x - 22) / 5) ** 2 <= 1
    vol[5:, gas] = -950.0
    u_node = node_from_volume(Volume(vol), "uLDCT", scene)
    seg = wf.masks_for_volume(u_node, None, ANATOMICAL, chunk=4)
    lung = segment_array(seg, "lung", u_node)
    assert not lung[5:, gas].any()
    np.testing.assert_array_equal(lung, purification_masks(vol, vol, ANATOMICAL).lung)
