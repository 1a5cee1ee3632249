"""IPv2's own output volumes, marked so the panel's input selectors can leave them out.

A denoised volume, a purified training input or label, or a fusion preview is never a
sensible uLDCT or NDCT to start from, yet each is a scalar volume like the scans, and a
long selector list of "chest IPv2 denoised", "chest IPv2 training input preview" ...
invites picking the wrong one. Every node the module creates carries the attribute
:data:`OUTPUT_ATTRIBUTE` (saved with the scene, so a reloaded .mrb keeps it); the input
selectors hide those node IDs (``qMRMLSortFilterProxyModel.hiddenNodeIDs``, Slicer
Libs/MRML/Widgets/qMRMLSortFilterProxyModel.h) while the output selector still lists them.
"""

from __future__ import annotations

from typing import Any

OUTPUT_ATTRIBUTE = "IPv2.Output"


def mark_output(node: Any, role: str) -> Any:
    """Mark ``node`` as made by IPv2 (``role``: denoised, training input, label, preview)."""
    node.SetAttribute(OUTPUT_ATTRIBUTE, role)
    return node


def own_output_ids(scene: Any) -> list[str]:
    """The IDs of the scene's volumes that IPv2 made, for the input selectors to hide."""
    nodes = scene.GetNodesByClass("vtkMRMLVolumeNode")
    found = (nodes.GetItemAsObject(i) for i in range(nodes.GetNumberOfItems()))
    return [node.GetID() for node in found if node.GetAttribute(OUTPUT_ATTRIBUTE)]


def first_input_volume(scene: Any) -> Any:
    """The first scalar volume that IPv2 did not make (the panel's default uLDCT), or None."""
    nodes = scene.GetNodesByClass("vtkMRMLScalarVolumeNode")
    for i in range(nodes.GetNumberOfItems()):
        node = nodes.GetItemAsObject(i)
        if not node.GetAttribute(OUTPUT_ATTRIBUTE) and not node.IsA("vtkMRMLLabelMapVolumeNode"):
            return node
    return None


def hide_outputs_from(selectors: list[Any], scene: Any) -> None:
    """Hide IPv2's outputs in these qMRMLNodeComboBoxes (their proxy model's
    ``hiddenNodeIDs``); called whenever the panel updates, so new outputs drop out."""
    hidden = own_output_ids(scene)
    for selector in selectors:
        selector.sortFilterProxyModel().hiddenNodeIDs = hidden
