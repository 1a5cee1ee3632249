"""Signal handlers that never raise inside an ``import``: the request waits for it to end.

The engine imports torch (and its other heavy libraries) lazily, inside the command, so
that commands which only parse or fail early stay fast. A SIGTERM or Ctrl+C therefore
often lands while ``import torch`` runs, and the handler's exception then interrupts a
C++ extension halfway through its initialisation: at best a half-loaded module, at worst
a C++ ``terminate`` (the process aborts with SIGABRT instead of cleaning up) or a process
that never exits. Both were seen: a purify stopped just after it printed "simulating S
from N" (the line before it loads torch) hung for minutes in CI, and the same stop at
random moments aborted one run in a few hundred here.

:class:`ImportSafeHandler` wraps a raising handler. When the signal arrives while the main
thread is importing (an ``importlib._bootstrap`` frame on its stack), it records the
signal and returns; a helper thread waits until the main thread has left every import
and sends it the signal again. A real signal (``pthread_kill``), not
``_thread.interrupt_main``: only a real one wakes a main thread blocked in a sleep, a
lock or a read, where a simulated one would wait for the call to return. Windows has no
``pthread_kill`` and gets the simulated one. Imports take seconds at most, so the stop is
delayed by that much and no more.
"""

from __future__ import annotations

import _thread
import signal
import sys
import threading
from collections.abc import Callable
from types import FrameType

Handler = Callable[[int, FrameType | None], None]

POLL_S = 0.02  # how often the helper looks whether the main thread still imports


def importing(frame: FrameType | None) -> bool:
    """Whether ``frame`` or one of its callers runs the import machinery.

    Module code executed by an import has ``importlib._bootstrap`` frames below it (they
    are hidden from tracebacks, not from the stack), whichever module is being loaded.
    """
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib._bootstrap"):
            return True
        frame = frame.f_back
    return False


class ImportSafeHandler:
    """Calls ``handler`` for a signal, postponed while the main thread is importing.

    Install it with ``signal.signal`` from the main thread and :meth:`close` it before
    it is uninstalled. From :meth:`close` on, requests are dropped, postponed ones too:
    the work they were meant to stop has already ended.
    """

    def __init__(self, handler: Handler) -> None:
        self._handler = handler
        self._pending: list[int] = []
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._helper: threading.Thread | None = None

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        if self._closed.is_set():
            return
        if importing(frame):
            self._postpone(signum)
            return
        self._handler(signum, frame)

    def _postpone(self, signum: int) -> None:
        with self._lock:
            if signum not in self._pending:
                self._pending.append(signum)
            if self._helper is None or not self._helper.is_alive():
                self._helper = threading.Thread(
                    target=self._redeliver, name="ipv2-deferred-signal", daemon=True
                )
                self._helper.start()

    def _redeliver(self) -> None:
        main = threading.main_thread().ident
        assert main is not None  # the main thread has started: it installed this handler
        while not self._closed.wait(POLL_S):
            if importing(sys._current_frames().get(main)):
                continue
            with self._lock:  # held while sending, so close() cannot slip in between
                if self._closed.is_set():
                    return
                pending, self._pending = self._pending, []
                self._helper = None  # a signal postponed again starts a new helper
                for signum in pending:
                    # If the main thread has entered another import by the time the
                    # handler runs, the request is simply postponed again.
                    _send(main, signum)
            return

    @property
    def postponed(self) -> tuple[int, ...]:
        """Signals received during an import and not yet delivered again."""
        with self._lock:
            return tuple(self._pending)

    def close(self) -> None:
        """Drop requests from now on; call it before the handler is uninstalled.

        Before, so that a signal sent again cannot meet the default action (which kills
        the process) once the previous handlers are back.
        """
        with self._lock:
            self._closed.set()
            helper = self._helper
        if helper is not None and helper is not threading.current_thread():
            helper.join(timeout=1.0)


def _send(thread_id: int, signum: int) -> None:
    if hasattr(signal, "pthread_kill"):
        signal.pthread_kill(thread_id, signum)
    else:  # Windows: runs the handler at the main thread's next bytecode
        _thread.interrupt_main(signal.Signals(signum))
