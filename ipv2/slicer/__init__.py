"""The engine's only door to Slicer: MRML nodes <-> engine values, and node workflows.

Everything in this package works on real MRML nodes (``slicer-core`` outside the
application, the real scene inside it) and contains no Qt, so the module Logic classes
stay thin over these functions and the tests exercise them on a real ``vtkMRMLScene``.
No other part of the engine imports ``slicer``.

The names below are loaded on first use (PEP 562 ``__getattr__``), not when the package
is imported: the module files import :mod:`ipv2.slicer.version_gate` first, which must
work on Slicer 5.8's Python 3.9, where the rest of the engine cannot be imported.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "install_dependencies": "ipv2.slicer.dependencies",
    "ijk_to_ras": "ipv2.slicer.nodes",
    "node_from_volume": "ipv2.slicer.nodes",
    "output_name": "ipv2.slicer.nodes",
    "scene_or_default": "ipv2.slicer.nodes",
    "volume_from_node": "ipv2.slicer.nodes",
    "MASK_SEGMENTS": "ipv2.slicer.segments",
    "segment_array": "ipv2.slicer.segments",
    "update_mask_segmentation": "ipv2.slicer.segments",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'ipv2.slicer' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
