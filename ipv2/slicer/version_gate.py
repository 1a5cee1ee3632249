"""Which Slicer can run the engine, said in one sentence instead of an import traceback.

The engine uses Python 3.10 features at import time (``X | Y`` between types outside
annotations, ``zip(strict=True)``, ``itertools.pairwise``); Slicer 5.8 ships Python 3.9
and Slicer 5.10 ships Python 3.12. Back-porting the engine to 3.9 would touch most
stages for one Slicer release that is being replaced, so the module files ask this
module first and, on an older Python, show :func:`unsupported_reason` in their panel.

This file must itself import under Python 3.9 (``Testing/test_slicer_panels_runtime.py``
runs it with a real 3.9 interpreter when one is installed), like ``ipv2/__init__.py``
and ``ipv2/slicer/__init__.py``, which it passes through.
"""

from __future__ import annotations

import sys
from typing import Any

MINIMUM_PYTHON = (3, 10)
MINIMUM_SLICER = "5.10"


def unsupported_reason(version_info: tuple[int, ...] | None = None) -> str | None:
    """None when this Python runs the engine, else the message the panel shows."""
    have = tuple(version_info if version_info is not None else sys.version_info[:3])
    if have[:2] >= MINIMUM_PYTHON:
        return None
    shown = ".".join(str(part) for part in have[:3])
    return (
        f"IPv2 needs 3D Slicer {MINIMUM_SLICER} or newer. This Slicer runs Python {shown}; "
        f"the IPv2 engine needs Python {MINIMUM_PYTHON[0]}.{MINIMUM_PYTHON[1]} or newer. "
        f"Install Slicer {MINIMUM_SLICER} (or a newer release) from download.slicer.org "
        "and install the IPv2 extension there."
    )


def message_panel(base: type, qt: Any, message: str) -> type:
    """A module widget class (subclass of Slicer's ``base``) whose panel shows ``message``
    alone; a module file binds it to its widget name, which is how Slicer finds panels."""

    def setup(self: Any) -> None:
        base.setup(self)  # type: ignore[attr-defined]
        label = qt.QLabel(message)
        label.wordWrap = True
        self.layout.addWidget(label)

    return type("UnsupportedWidget", (base,), {"setup": setup, "__doc__": message})
