"""The dialogs :func:`ipv2.slicer.panel_actions.panel_action` needs, in the Slicer application.

Both module widgets inherit this next to Slicer's widget class. ``slicer`` is imported
when a dialog is shown, so this file imports outside Slicer (it is the adapter package,
the one place the engine may reach Slicer).
"""

from __future__ import annotations

from typing import Any


class SlicerDialogs:
    """``busy()`` and ``showError()`` of panel_action's protocol."""

    def busy(self) -> Any:
        import slicer

        return slicer.util.WaitCursor()  # Slicer >= 5.8 Base/Python/slicer/util.py

    def showError(self, text: str, details: str) -> None:
        import slicer

        slicer.util.errorDisplay(text, detailedText=details)  # traceback, pip's output
