"""SIGTERM handled like Ctrl+C: an exception in the main thread, so cleanup runs.

Schedulers (SLURM, Kubernetes), ``timeout``, service managers and the Slicer panels'
Cancel (``runtime.jobs.Job.stop``) end a command with SIGTERM, whose default action kills
the process on the spot: no ``finally`` block runs, so an ``atomic_output_dir`` leaves
its hidden ``.NAME.partial-XXXX`` folder and an ``atomic_file`` its temporary file.
Ctrl+C does not have that problem because Python turns SIGINT into ``KeyboardInterrupt``.

:func:`terminate_as_interrupt` gives SIGTERM the same treatment for the duration of a
command: the handler raises :class:`Terminated`, a ``KeyboardInterrupt`` (not an
``Exception``, so no ``except Exception`` in the engine or a library swallows it), and
every context manager and ``finally`` on the way out removes what it was building. The
CLI then exits ``128 + signal`` (143 for SIGTERM) with one line.

Commands with a cooperative stop (training checkpoints and exits, denoising stops between
batches) install their own handlers through ``runtime.stop_requests.StopRequest`` while
that work runs; it saves and restores this one, so their graceful path is unchanged and
this handler only covers the time outside it.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

# SIGBREAK is what Job.stop sends on Windows (CTRL_BREAK_EVENT); it exists only there.
_SIGNALS: tuple[int, ...] = tuple(
    s for s in (getattr(signal, "SIGTERM", None), getattr(signal, "SIGBREAK", None)) if s
)


class Terminated(KeyboardInterrupt):
    """The process was asked to terminate (SIGTERM) while a command ran."""

    def __init__(self, signum: int) -> None:
        self.signal_name = signal.Signals(signum).name
        self.exit_status = 128 + int(signum)  # the shell's convention: 143 for SIGTERM
        super().__init__(f"stopped by {self.signal_name}; partial outputs removed")

    @property
    def message(self) -> str:
        return str(self.args[0])


@contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM raises :class:`Terminated` in the main thread.

    Only the first request raises: cleanup must finish once it has started, so later
    ones are ignored (SIGKILL still ends the process at once for whoever cannot wait).
    Outside the main thread (a command run from a worker thread), Python cannot install
    handlers; the block then runs unchanged. The previous handlers are restored on exit.
    """
    raised = False

    def handle(signum: int, frame: FrameType | None) -> None:
        nonlocal raised
        if raised:  # a second signal already queued when the first one was handled
            return
        raised = True
        signal.signal(signum, signal.SIG_IGN)
        raise Terminated(signum)

    previous: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for sig in _SIGNALS:
            previous[sig] = signal.signal(sig, handle)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            # None: a handler installed outside Python, which cannot be put back.
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)
