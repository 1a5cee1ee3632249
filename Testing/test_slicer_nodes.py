"""The MRML adapter on a real vtkMRMLScene (slicer-core), no Slicer application needed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from factories import oblique_volume

from ipv2 import slicer as mrml
from ipv2.core.volume import Volume


def test_volume_round_trip_keeps_oblique_geometry(scene) -> None:  # type: ignore[no-untyped-def]
    vol = oblique_volume()
    node = mrml.node_from_volume(vol, "chest", scene)
    assert node.GetScene() is scene
    back = mrml.volume_from_node(node)
    np.testing.assert_array_equal(back.array, vol.array)
    np.testing.assert_allclose(back.spacing, vol.spacing, atol=1e-9)
    np.testing.assert_allclose(back.origin, vol.origin, atol=1e-9)
    np.testing.assert_allclose(back.direction, vol.direction, atol=1e-9)


def test_node_geometry_matches_slicer_convention(scene) -> None:  # type: ignore[no-untyped-def]
    """An LPS origin (10, 20, 30) is RAS (-10, -20, 30); ijk (1, 0, 0) moves along -R."""
    vol = Volume(np.zeros((2, 3, 4)), spacing=(0.5, 0.7, 2.0), origin=(10.0, 20.0, 30.0))
    node = mrml.node_from_volume(vol, "v", scene)
    assert node.GetOrigin() == pytest.approx((-10.0, -20.0, 30.0))
    assert node.GetSpacing() == pytest.approx((0.5, 0.7, 2.0))
    import vtk

    m = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(m)
    assert m.GetElement(0, 0) == pytest.approx(-0.5)


def test_int16_output_and_names(scene) -> None:  # type: ignore[no-untyped-def]
    vol = Volume(np.array([[[-1000.4, 20.6]]], np.float32))
    src = mrml.node_from_volume(vol, "uLDCT", scene)
    out = mrml.node_from_volume(vol, mrml.output_name(src, "denoised"), scene, dtype="int16")
    assert out.GetName() == "uLDCT denoised"
    assert out.GetImageData().GetScalarTypeAsString() == "short"
    np.testing.assert_array_equal(mrml.volume_from_node(out).array, [[[-1000, 21]]])


def test_masks_become_named_coloured_segments(scene) -> None:  # type: ignore[no-untyped-def]
    vol = oblique_volume(shape=(3, 10, 12))
    ref = mrml.node_from_volume(vol, "ct", scene)
    rng = np.random.default_rng(0)
    lung = rng.random(vol.shape) > 0.6
    body = ~lung & (rng.random(vol.shape) > 0.5)
    seg = mrml.update_mask_segmentation({"lung": lung, "body": body}, ref, scene=scene)
    segmentation = seg.GetSegmentation()
    assert segmentation.GetNumberOfSegments() == 2
    assert segmentation.GetSegment("lung").GetName() == "Lung"
    assert segmentation.GetSegment("lung").GetColor() == pytest.approx(
        mrml.MASK_SEGMENTS["lung"][1]
    )
    np.testing.assert_array_equal(mrml.segment_array(seg, "lung", ref), lung)
    np.testing.assert_array_equal(mrml.segment_array(seg, "body", ref), body)


def test_single_slice_update_replaces_segment(scene) -> None:  # type: ignore[no-untyped-def]
    vol = oblique_volume(shape=(4, 8, 8))
    ref = mrml.node_from_volume(vol, "ct", scene)
    first = np.zeros((1, 8, 8), bool)
    first[0, 2:5, 2:5] = True
    seg = mrml.update_mask_segmentation({"lung": first}, ref, first_slice=2, scene=scene)
    second = np.zeros((1, 8, 8), bool)
    second[0, 5:7, 1:3] = True
    mrml.update_mask_segmentation({"lung": second}, ref, segmentation=seg, first_slice=3)
    assert seg.GetSegmentation().GetNumberOfSegments() == 1
    full = mrml.segment_array(seg, "lung", ref)
    assert full.sum() == second.sum()
    np.testing.assert_array_equal(full[3], second[0])


def test_bad_nodes_are_refused(scene) -> None:  # type: ignore[no-untyped-def]
    from ipv2.core.errors import InputError

    with pytest.raises(InputError, match="scalar volume"):
        mrml.volume_from_node(None)
    empty = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "empty")
    with pytest.raises(InputError, match="no voxel data"):
        mrml.volume_from_node(empty)
    with pytest.raises(InputError, match="unknown mask"):
        ref = mrml.node_from_volume(oblique_volume(), "ct", scene)
        mrml.update_mask_segmentation({"liver": np.zeros((5, 12, 9), bool)}, ref, scene=scene)


def test_dependencies_present_means_no_question() -> None:
    asked: list[str] = []
    assert mrml.install_dependencies(lambda text: asked.append(text) or True) is True
    assert asked == []


def test_missing_package_asks_then_installs_with_pins(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from ipv2.slicer.requirements import Requirement

    calls: list[list[str]] = []
    seen_constraints: list[str] = []

    def pip_install(args: list[str]) -> None:
        calls.append(args)
        seen_constraints.append(Path(args[-1]).read_text())

    absent = [Requirement("ipv2-test-absent-package", "1.0")]
    assert (
        mrml.install_dependencies(lambda text: False, absent, pip_install, torch_available=True)
        is False
    )
    assert calls == []
    assert (
        mrml.install_dependencies(lambda text: True, absent, pip_install, torch_available=True)
        is True
    )
    assert calls[0][0] == "ipv2-test-absent-package>=1.0"
    assert "numpy==" in seen_constraints[0]


def test_failed_install_reports_output_and_hint() -> None:
    from ipv2.core.errors import IPv2Error
    from ipv2.slicer.requirements import Requirement

    def pip_install(args: list[str]) -> None:
        raise RuntimeError("ERROR: Could not fetch URL: Connection timed out")

    absent = [Requirement("ipv2-test-absent-package", "1.0")]
    with pytest.raises(IPv2Error, match="Connection timed out") as err:
        mrml.install_dependencies(lambda text: True, absent, pip_install, torch_available=True)
    assert "offline" in str(err.value)


def test_compare_layout_is_registered_once(scene) -> None:  # type: ignore[no-untyped-def]
    from ipv2.slicer.layout import COMPARE_LAYOUT_ID, register_compare_layout

    assert register_compare_layout(scene) == COMPARE_LAYOUT_ID
    assert register_compare_layout(scene) == COMPARE_LAYOUT_ID
    assert scene.GetNumberOfNodesByClass("vtkMRMLLayoutNode") == 1
    layout = scene.GetFirstNodeByClass("vtkMRMLLayoutNode")
    xml = layout.GetLayoutDescription(COMPARE_LAYOUT_ID)
    assert xml.count("vtkMRMLSliceNode") == 3 and "Axial" in xml
