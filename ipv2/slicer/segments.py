"""Purification masks as named, coloured segments of a segmentation node."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt
import slicer
import vtk
from vtk.util import numpy_support

from ipv2.core.errors import InputError
from ipv2.slicer.nodes import output_name, scene_or_default

# Segments of the purification masks: id -> (display name, RGB colour).
MASK_SEGMENTS: dict[str, tuple[str, tuple[float, float, float]]] = {
    "background": ("Background (air outside the patient)", (0.25, 0.45, 0.95)),
    "body": ("Body (chest wall, mediastinum, bone)", (0.93, 0.75, 0.55)),
    "lung": ("Lung", (0.95, 0.35, 0.45)),
}


def _ensure_converter_rules() -> None:
    """The segmentation machinery needs its converter rules (the app registers them)."""
    factory = slicer.vtkSegmentationConverterFactory.GetInstance()
    rules = factory.GetConverterRules()
    if rules is None or len(rules) == 0:
        factory.RegisterConverterRule(slicer.vtkBinaryLabelmapToClosedSurfaceConversionRule())
        factory.RegisterConverterRule(slicer.vtkClosedSurfaceToBinaryLabelmapConversionRule())


def _oriented_image(mask: npt.NDArray[np.bool_], reference: Any, first_slice: int) -> Any:
    image = slicer.vtkOrientedImageData()
    z, y, x = mask.shape
    image.SetExtent(0, x - 1, 0, y - 1, first_slice, first_slice + z - 1)
    image.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 1)
    flat = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())
    flat[:] = mask.astype(np.uint8).ravel()
    m = vtk.vtkMatrix4x4()
    reference.GetIJKToRASMatrix(m)
    image.SetImageToWorldMatrix(m)
    return image


def update_mask_segmentation(
    masks: Mapping[str, npt.NDArray[np.bool_]],
    reference: Any,
    segmentation: Any | None = None,
    *,
    first_slice: int = 0,
    scene: Any | None = None,
    name: str | None = None,
) -> Any:
    """Show purification masks as named, coloured segments of a segmentation node.

    ``masks`` maps segment ids of :data:`MASK_SEGMENTS` to bool arrays (z, y, x) that
    start at slice ``first_slice`` of ``reference``: a whole volume, or the single slice
    a live preview recomputed. Existing segments are replaced, so the node can be
    updated many times a second without growing.
    """
    scene = scene_or_default(scene)
    _ensure_converter_rules()
    if segmentation is None:
        label = name or output_name(reference, "IPv2 masks")
        segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", label)
        segmentation.CreateDefaultDisplayNodes()
        segmentation.SetReferenceImageGeometryParameterFromVolumeNode(reference)
    seg = segmentation.GetSegmentation()
    for segment_id, mask in masks.items():
        if segment_id not in MASK_SEGMENTS:
            raise InputError(f"unknown mask '{segment_id}'; expected one of {list(MASK_SEGMENTS)}")
        if mask.ndim == 2:
            mask = mask[np.newaxis]
        display, color = MASK_SEGMENTS[segment_id]
        if seg.GetSegment(segment_id) is not None:
            seg.RemoveSegment(segment_id)
        image = _oriented_image(mask, reference, first_slice)
        segmentation.AddSegmentFromBinaryLabelmapRepresentation(image, display, color, segment_id)
    return segmentation


def segment_array(segmentation: Any, segment_id: str, reference: Any) -> npt.NDArray[np.bool_]:
    """A segment as a bool array on the reference volume's grid (z, y, x)."""
    image = slicer.vtkOrientedImageData()
    segmentation.GetBinaryLabelmapRepresentation(segment_id, image)
    ref = reference.GetImageData().GetDimensions()
    out = np.zeros((ref[2], ref[1], ref[0]), dtype=bool)
    if image.GetPointData().GetScalars() is None:
        return out
    x0, x1, y0, y1, z0, z1 = image.GetExtent()
    if x1 < x0:
        return out
    data = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())
    block = data.reshape(z1 - z0 + 1, y1 - y0 + 1, x1 - x0 + 1)
    # Shared labelmaps store several segments as label values; pick this one's value.
    value = seg_label_value(segmentation, segment_id)
    out[z0 : z1 + 1, y0 : y1 + 1, x0 : x1 + 1] = block == value
    return out


def seg_label_value(segmentation: Any, segment_id: str) -> int:
    segment = segmentation.GetSegmentation().GetSegment(segment_id)
    return int(segment.GetLabelValue()) if hasattr(segment, "GetLabelValue") else 1
