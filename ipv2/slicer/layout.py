"""A compare layout: three axial slice views side by side (uLDCT | NDCT | result).

Slicer has no built-in one-row, three-slice layout, so it is registered once per scene
from an XML description; the views are the standard Red, Yellow and Green slices, all
axial, so linking them keeps the same anatomy under the cursor in all three.

The XML's orientation property alone does not make them axial: ``vtkMRMLLayoutLogic``
applies ``action="default"`` properties only to views it creates, and ``"relayout"``
ones to views that already exist (``CreateMissingViews`` / ``ApplyProperties``, Slicer
v5.10.0 Libs/MRML/Logic/vtkMRMLLayoutLogic.cxx). Yellow and Green always exist (the
start-up layout made them sagittal and coronal), so :func:`show_compare_layout` sets the
three slice nodes' orientation itself after switching the layout.
"""

from __future__ import annotations

from typing import Any

from ipv2.slicer.nodes import scene_or_default

COMPARE_LAYOUT_ID = 20251  # any id not used by Slicer's own layouts (they stay below 1000)

_VIEW = (
    '<item><view class="vtkMRMLSliceNode" singletontag="{tag}">'
    '<property name="orientation" action="default">Axial</property>'
    '<property name="viewlabel" action="default">{label}</property>'
    '<property name="viewcolor" action="default">{color}</property>'
    "</view></item>"
)
COMPARE_LAYOUT_XML = (
    '<layout type="horizontal">'
    + _VIEW.format(tag="Red", label="R", color="#F34A33")
    + _VIEW.format(tag="Yellow", label="Y", color="#EDD54C")
    + _VIEW.format(tag="Green", label="G", color="#6EB04B")
    + "</layout>"
)


def register_compare_layout(scene: Any | None = None) -> int:
    """Add the layout to the scene's layout node (idempotent); returns its id."""
    scene = scene_or_default(scene)
    layout = scene.GetFirstNodeByClass("vtkMRMLLayoutNode")
    if layout is None:
        layout = scene.AddNewNodeByClass("vtkMRMLLayoutNode")
    if not layout.IsLayoutDescription(COMPARE_LAYOUT_ID):
        layout.AddLayoutDescription(COMPARE_LAYOUT_ID, COMPARE_LAYOUT_XML)
    return COMPARE_LAYOUT_ID


COMPARE_VIEWS = ("Red", "Yellow", "Green")


def axial_compare_views(scene: Any | None = None) -> list[Any]:
    """Turn the compare layout's slice views axial; the slice nodes that were found."""
    scene = scene_or_default(scene)
    found = []
    for tag in COMPARE_VIEWS:
        node = scene.GetSingletonNode(tag, "vtkMRMLSliceNode")
        if node is not None:
            node.SetOrientation("Axial")
            found.append(node)
    return found


def show_compare_layout(scene: Any | None = None) -> list[Any]:
    """Switch to the three-view compare layout with every view axial.

    Does what ``qMRMLLayoutManager::setLayout`` does (drop maximized views, set the layout
    node's view arrangement; Slicer v5.10.0 Libs/MRML/Widgets/qMRMLLayoutManager.cxx), so
    it needs no layout manager and works on a scene without a main window.
    """
    scene = scene_or_default(scene)
    layout_id = register_compare_layout(scene)
    layout = scene.GetFirstNodeByClass("vtkMRMLLayoutNode")
    layout.RemoveAllMaximizedViewNodes()
    layout.SetViewArrangement(layout_id)
    return axial_compare_views(scene)
