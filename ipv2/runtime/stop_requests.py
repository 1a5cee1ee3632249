"""Turn SIGTERM/SIGINT into a polite request that long loops poll between steps.

The Slicer Cancel button, schedulers (SLURM, Kubernetes) and Ctrl+C all send a signal.
Instead of dying mid-write, a command polls ``requested`` between steps, stops cleanly,
and reports ``done`` with status ``stopped`` or ``cancelled``. A second signal of the
same kind restores the default action, so an impatient user can still force it.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType, TracebackType
from typing import Any


class StopRequest:
    """Context manager installing the handlers (main thread only)."""

    def __init__(self) -> None:
        self.requested = False
        self.signal_name: str | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:
            signal.signal(signum, self._previous.get(signum, signal.SIG_DFL))
        self.requested = True
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
