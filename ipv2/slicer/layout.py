"""A compare layout: three axial slice views side by side (uLDCT | NDCT | result).

Slicer has no built-in one-row, three-slice layout, so it is registered once per scene
from an XML description; the views are the standard Red, Yellow and Green slices, all
axial, so linking them keeps the same anatomy under the cursor in all three.
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
