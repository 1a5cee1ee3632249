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

Neither a SIGTERM nor a Ctrl+C raises inside an ``import`` (torch is loaded lazily, so
one often lands there): :mod:`ipv2.cli.import_safe_signals` postpones it until the import
has finished.

A Job's stop-request file (``$IPV2_STOP_FILE``, see ``runtime.stop_requests``) means the
same as SIGTERM: while the block runs, a watcher thread delivers it as a simulated SIGTERM
(``_thread.interrupt_main``) to whichever handler is installed, unless a cooperative
``StopRequest`` is active and polls the file itself. The block also records this
process's pid for the Job (``$IPV2_PID_FILE``), so Kill reaches the engine even when a
launcher such as Slicer's ``PythonSlicer`` stands between the Job and the engine.
"""

from __future__ import annotations

import _thread
import contextlib
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

from ipv2.cli.import_safe_signals import ImportSafeHandler
from ipv2.runtime.stop_requests import announce_pid, watch_stop_file

# SIGBREAK (Windows only) is what Ctrl+Break in a console sends; Job.stop uses the stop file.
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
    SIGTERM, and SIGINT's own handler, wait for a running import to finish first.
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

    main = threading.current_thread() is threading.main_thread()
    with contextlib.ExitStack() as stack:  # every step undone, even if another one raises
        if main:
            # Each guard's close is registered after its restores, so it runs before them
            # (last in, first out): see ImportSafeHandler.close.
            guard = ImportSafeHandler(handle)
            for sig in _SIGNALS:
                stack.callback(_restore, sig, signal.signal(sig, guard))
            stack.callback(guard.close)
            interrupt = signal.getsignal(signal.SIGINT)
            if callable(interrupt):  # not SIG_IGN (a job started with '&'), SIG_DFL or None
                guard = ImportSafeHandler(interrupt)
                stack.callback(_restore, signal.SIGINT, signal.signal(signal.SIGINT, guard))
                stack.callback(guard.close)
            announce_pid()
            # The stop file arrives as the SIGTERM it stands for; interrupt_main does
            # nothing without a Python handler, so outside the main thread none runs.
            stack.enter_context(watch_stop_file(lambda: _thread.interrupt_main(signal.SIGTERM)))
        yield


def _restore(sig: int, handler: Any) -> None:
    # None: a handler installed outside Python, which cannot be put back.
    previous = signal.SIG_DFL if handler is None else handler
    try:
        signal.signal(sig, previous)
    except BaseException:
        # signal.signal runs a pending signal's handler before it installs the new one,
        # and ours may raise Terminated there: install it again, then let that go on.
        signal.signal(sig, previous)
        raise
