"""Signal handlers that never raise inside an ``import``: the request waits for it to end.

The engine imports torch (and its other heavy libraries) lazily, inside the command, so
that commands which only parse or fail early stay fast. A SIGTERM or Ctrl+C therefore
often lands while ``import torch`` runs, and the handler's exception then interrupts a
C++ extension halfway through its initialisation: at best a half-loaded module, at worst
a C++ ``terminate`` (the process aborts with SIGABRT instead of cleaning up) or a process
that never exits. A purify stopped just after it printed "simulating S from N" (the line
before it loads torch) hung for minutes in CI, and stops at random moments during that
import aborted one run in about 180 here.

:class:`ImportSafeHandler` wraps a raising handler. When the signal arrives while the main
thread is importing (an ``importlib._bootstrap`` frame on its stack), it records the
signal and returns; a helper thread waits until the main thread has left every import
and sends it the signal again. A real signal (``pthread_kill``), not
``_thread.interrupt_main``: only a real one wakes a main thread blocked in a sleep, a
lock or a read, where a simulated one would wait for the call to return. Windows has no
``pthread_kill`` and gets the simulated one. The stop waits as long as the import does:
usually a few seconds, longer for a first import of torch from slow storage.
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

    Create it in the main thread, install it with ``signal.signal`` and :meth:`close` it
    before it is uninstalled. During an import the handler only appends to a list: a
    second signal arriving while a handler runs can run it again, nested, so taking a
    lock or starting a thread there can deadlock. The helper thread that sends postponed
    signals again therefore runs from the start and polls, which costs a few
    microseconds every ``POLL_S``.
    """

    def __init__(self, handler: Handler, *, send: Callable[[int, int], None] | None = None) -> None:
        """``send(thread_id, signum)`` delivers a postponed signal again (tests record it)."""
        self._handler = handler
        self._send = send or send_signal
        self._pending: list[int] = []  # appended by the handler: atomic, no lock
        self._lock = threading.Lock()  # between the helper's sending and close()
        self._closed = threading.Event()
        self._helper = threading.Thread(
            target=self._redeliver, name="ipv2-deferred-signal", daemon=True
        )
        self._helper.start()

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        if not self._closed.is_set() and importing(frame):
            self._pending.append(signum)
            return
        self._handler(signum, frame)

    def _redeliver(self) -> None:
        main = threading.main_thread().ident
        assert main is not None  # the main thread has started: it created this object
        while not self._closed.wait(POLL_S):
            if not self._pending or importing(sys._current_frames().get(main)):
                continue
            with self._lock:  # held while sending, so close() cannot slip in between
                if self._closed.is_set():
                    return
                pending = self._take_pending()
                for signum in pending:
                    # If the main thread has entered another import by the time the
                    # handler runs, the request is simply postponed again.
                    self._send(main, signum)

    def _take_pending(self) -> list[int]:
        """The postponed signals, each once, in order of arrival; the list is emptied."""
        taken: list[int] = []
        while self._pending:
            signum = self._pending.pop(0)
            if signum not in taken:
                taken.append(signum)
        return taken

    @property
    def postponed(self) -> tuple[int, ...]:
        """Signals received during an import and not yet sent again."""
        return tuple(self._pending)

    def close(self) -> None:
        """Stop postponing; a request still postponed is handled here and now.

        Call it before the handler is uninstalled: a signal sent again must not meet the
        default action (which kills the process) once the previous handlers are back,
        and a postponed request must not be lost because the work ended first. From here
        on a signal reaching this object calls ``handler`` at once, as before it existed.
        """
        self._closed.set()
        with self._lock:  # waits out a send in progress; none follows (checked under it)
            pass
        if self._helper is not threading.current_thread():
            self._helper.join(timeout=1.0)
        for signum in self._take_pending():
            self._handler(signum, None)


def send_signal(thread_id: int, signum: int) -> None:
    """A real signal to that thread where possible, so that it wakes from a wait."""
    if hasattr(signal, "pthread_kill"):
        signal.pthread_kill(thread_id, signum)
    else:  # Windows: runs the handler at the main thread's next bytecode
        _thread.interrupt_main(signal.Signals(signum))
