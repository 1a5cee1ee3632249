"""The change map in Slicer: a label overlay on the denoised volume and its one-line summary.

A radiologist checking a denoised scan wants to see at a glance where the model did
more than remove noise. :func:`show_change_map` computes the engine's change map
(:mod:`ipv2.metrics.change_map`) from the input and denoised volume nodes, puts the
flagged voxels into a label map node (orange: brighter than the input, blue: darker,
e.g. a removed nodule) and the difference into a scalar volume node, and shows the
labels over the denoised volume: in the slice views that already show it (the panel's
side-by-side comparison keeps its uLDCT and NDCT views), else in every view. Re-running
it updates the same nodes, so toggling the panel's checkbox never piles up nodes. No Qt:
the panel calls it (through :mod:`ipv2.slicer.change_map_step`) and shows
:attr:`ChangeOverlay.summary`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import vtk
from vtk.util import numpy_support

from ipv2.core.errors import InputError
from ipv2.metrics.change_map import (
    BRIGHTER,
    DARKER,
    ChangeMapOptions,
    RegionChange,
    change_map,
    regions_of_image,
    summarize,
)
from ipv2.slicer.nodes import node_from_volume, output_name, scene_or_default, volume_from_node

COLOURS = {
    BRIGHTER: ("brighter than input", (1.0, 0.55, 0.0)),
    DARKER: ("darker than input", (0.2, 0.6, 1.0)),
}
LABEL_OPACITY = 0.6


@dataclass
class ChangeOverlay:
    """The nodes showing one change map and its per-region figures."""

    labels: Any  # vtkMRMLLabelMapVolumeNode
    difference: Any  # vtkMRMLScalarVolumeNode (denoised - input, HU)
    regions: list[RegionChange] = field(default_factory=list)

    @property
    def summary(self) -> str:
        """One line for the panel, e.g. '0.3% of lung voxels changed beyond noise (...)'."""
        return "; ".join(r.line() for r in self.regions)


def _colour_table(scene: Any, existing: Any | None) -> Any:
    if existing is not None and existing.IsA("vtkMRMLColorTableNode"):
        return existing
    table = scene.AddNewNodeByClass("vtkMRMLColorTableNode", "IPv2 change map colours")
    table.SetTypeToUser()
    table.SetNumberOfColors(3)
    table.SetColor(0, "unchanged", *(0.0, 0.0, 0.0, 0.0))  # VTK takes rgba positionally
    for value, (name, (r, g, b)) in COLOURS.items():
        table.SetColor(value, name, *(r, g, b, 1.0))
    return table


def _fill_label_node(node: Any, labels: npt.NDArray[np.uint8], geometry_from: Any) -> None:
    """Voxels into the label node, on the denoised node's exact IJK-to-RAS geometry."""
    image = vtk.vtkImageData()
    z, y, x = labels.shape
    image.SetDimensions(x, y, z)
    scalars = numpy_support.numpy_to_vtk(np.ascontiguousarray(labels).ravel(), deep=True)
    image.GetPointData().SetScalars(scalars)
    m = vtk.vtkMatrix4x4()
    geometry_from.GetIJKToRASMatrix(m)
    node.SetIJKToRASMatrix(m)
    node.SetAndObserveImageData(image)


def show_in_slice_views(scene: Any, denoised: Any, labels: Any) -> None:
    """The change labels over the denoised volume: in the views whose background it is
    already (e.g. the third view of the comparison), else in every view as background."""
    composites = scene.GetNodesByClass("vtkMRMLSliceCompositeNode")
    views = [composites.GetItemAsObject(i) for i in range(composites.GetNumberOfItems())]
    showing = [c for c in views if c.GetBackgroundVolumeID() == denoised.GetID()]
    for comp in showing or views:
        comp.SetBackgroundVolumeID(denoised.GetID())
        comp.SetLabelVolumeID(labels.GetID())
        comp.SetLabelOpacity(LABEL_OPACITY)


def hide_in_slice_views(scene: Any, labels: Any) -> None:
    """Take the change labels out of every view that shows them (the nodes stay)."""
    composites = scene.GetNodesByClass("vtkMRMLSliceCompositeNode")
    for i in range(composites.GetNumberOfItems()):
        comp = composites.GetItemAsObject(i)
        if comp.GetLabelVolumeID() == labels.GetID():
            comp.SetLabelVolumeID(None)


def show_change_map(
    input_node: Any,
    denoised_node: Any,
    *,
    overlay: ChangeOverlay | None = None,
    regions: Mapping[str, npt.ArrayLike] | None = None,
    options: ChangeMapOptions | None = None,
    scene: Any | None = None,
) -> ChangeOverlay:
    """Compute the change map of ``denoised_node`` against ``input_node`` and show it.

    ``regions`` (e.g. background/body/lung bool arrays on the volumes' grid) split the
    summary; without them, masks are computed from the denoised volume, and when that
    fails the summary covers the whole volume. ``overlay`` (a previous result) is
    updated in place.
    """
    scene = scene_or_default(scene)
    source, denoised = volume_from_node(input_node), volume_from_node(denoised_node)
    if source.shape != denoised.shape:
        raise InputError(
            f"'{input_node.GetName()}' {source.shape} and '{denoised_node.GetName()}' "
            f"{denoised.shape} differ in size; the change map compares a volume with its "
            "denoised output"
        )
    cmap = change_map(source.array, denoised.array, options)
    if regions is None:
        regions = regions_of_image(denoised.array)
    figures = summarize(cmap, regions)
    if overlay is None:
        label_node = scene.AddNewNodeByClass(
            "vtkMRMLLabelMapVolumeNode", output_name(denoised_node, "change map")
        )
        label_node.CreateDefaultDisplayNodes()
        difference_node = None
    else:
        label_node, difference_node = overlay.labels, overlay.difference
    _fill_label_node(label_node, cmap.labels, denoised_node)
    display = label_node.GetDisplayNode()
    display.SetAndObserveColorNodeID(_colour_table(scene, display.GetColorNode()).GetID())
    difference_node = node_from_volume(
        denoised.with_array(cmap.difference),
        output_name(denoised_node, "difference"),
        scene,
        node=difference_node,
    )
    show_in_slice_views(scene, denoised_node, label_node)
    return ChangeOverlay(labels=label_node, difference=difference_node, regions=figures)
