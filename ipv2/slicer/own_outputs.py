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
PREVIEW_ATTRIBUTE = "IPv2.Preview"  # which preview a node holds (its name may be made unique)


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


def hide_outputs_from(selectors: list[Any], scene: Any, keep: list[Any] | None = None) -> None:
    """Hide IPv2's outputs in these qMRMLNodeComboBoxes (their proxy model's
    ``hiddenNodeIDs``); called whenever the panel updates, so new outputs drop out.

    Nodes in ``keep`` (the current choices) stay listed: hiding a combo box's current
    node makes Qt select its neighbour, which would switch the panel's input silently.
    """
    kept = {node.GetID() for node in keep or [] if node is not None}
    hidden = [node_id for node_id in own_output_ids(scene) if node_id not in kept]
    for selector in selectors:
        selector.sortFilterProxyModel().hiddenNodeIDs = hidden


def mark_preview(node: Any, name: str) -> Any:
    """Mark ``node`` as IPv2's preview ``name`` (see :func:`reusable_preview`)."""
    node.SetAttribute(PREVIEW_ATTRIBUTE, name)
    return mark_output(node, "preview")


def reusable_preview(scene: Any, name: str) -> Any:
    """The preview ``name`` to refill, or None. Found by its mark, not by its node name:
    a user's node that happens to have that name is never overwritten (and the preview,
    then created as "name_1", is still found the next time)."""
    nodes = scene.GetNodesByClass("vtkMRMLScalarVolumeNode")
    for i in range(nodes.GetNumberOfItems()):
        node = nodes.GetItemAsObject(i)
        if node.GetAttribute(PREVIEW_ATTRIBUTE) == name:
            return node
    return None
