"""Graceful stop: SIGTERM/SIGINT finish the current step, then checkpoint and exit.

Schedulers (SLURM, Kubernetes) and the Slicer Cancel button send SIGTERM; a user presses
Ctrl+C. Either sets a flag the loop polls between steps, so the run stops with a usable
checkpoint and a ``done`` event of status ``stopped`` instead of losing the work since
the last periodic save. A second signal of the same kind restores the default action.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType, TracebackType
from typing import Any


class StopFlag:
    """Context manager installing the handlers (main thread only) and exposing ``.set``."""

    def __init__(self) -> None:
        self.set = False
        self.signal_name: str | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopFlag:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.set:
            signal.signal(signum, self._previous.get(signum, signal.SIG_DFL))
        self.set = True
        self.signal_name = signal.Signals(signum).name

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
