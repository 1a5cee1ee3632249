"""The engine's only door to Slicer: MRML nodes <-> engine values, and node workflows.

Everything in this package works on real MRML nodes (``slicer-core`` outside the
application, the real scene inside it) and contains no Qt, so the module Logic classes
stay thin over these functions and the tests exercise them on a real ``vtkMRMLScene``.
No other part of the engine imports ``slicer``.
"""

from ipv2.slicer.dependencies import install_dependencies
from ipv2.slicer.nodes import (
    ijk_to_ras,
    node_from_volume,
    output_name,
    scene_or_default,
    volume_from_node,
)
from ipv2.slicer.segments import MASK_SEGMENTS, segment_array, update_mask_segmentation

__all__ = [
    "MASK_SEGMENTS",
    "ijk_to_ras",
    "install_dependencies",
    "node_from_volume",
    "output_name",
    "scene_or_default",
    "segment_array",
    "update_mask_segmentation",
    "volume_from_node",
]
