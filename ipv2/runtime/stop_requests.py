"""A polite stop request, by signal or by file, that long loops poll between steps.

The Slicer Cancel button, schedulers (SLURM, Kubernetes) and Ctrl+C ask a command to stop.
Instead of dying mid-write, a command polls ``requested`` between steps, stops cleanly,
and reports ``done`` with status ``stopped`` or ``cancelled``.

Two ways in, one meaning:

- a signal (SIGTERM, SIGINT): what terminals, schedulers and ``kill`` send. A second
  signal of the same kind restores the default action, so an impatient user can force it;
- a stop-request file, named by the ``IPV2_STOP_FILE`` environment variable: what a
  :class:`ipv2.runtime.jobs.Job` writes. Signals do not reach the engine reliably from
  Slicer: its ``PythonSlicer`` is a CTK launcher that runs ``python-real`` as a child and
  forwards no signal (commontk/AppLauncher ``Base/ctkAppLauncher.cpp``: a plain
  ``QProcess::start`` and no signal handler, so SIGTERM kills the launcher alone), and on
  Windows a console-less Slicer cannot send CTRL_BREAK at all. A file works everywhere.

While a command runs, :func:`watch_stop_file` (started by the CLI) turns the file into
the same simulated SIGTERM for code that has no cooperative stop, and the engine records
its pid in ``IPV2_PID_FILE`` so a Job can force-kill the real engine process, whoever
launched it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

STOP_FILE_ENV = "IPV2_STOP_FILE"
PID_FILE_ENV = "IPV2_PID_FILE"
FILE_REQUEST = "stop request"  # ``signal_name`` when the request came as a file


def stop_file() -> Path | None:
    """The stop-request file this process watches (None when not run by a Job)."""
    value = os.environ.get(STOP_FILE_ENV, "")
    return Path(value) if value else None


class _FileRequestState:
    """Process-wide: who honours the stop file, so it is acted on exactly once.

    A cooperative :class:`StopRequest` polls the file itself; the watcher thread acts
    only while none is active. Once either has seen the file, the request is spent: a
    training run that stopped gracefully must not be interrupted again afterwards.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.active = 0
        self.spent = False


_STATE = _FileRequestState()


class StopRequest:
    """Context manager installing the signal handlers (main thread only) and polling the file.

    ``stop_path`` defaults to ``$IPV2_STOP_FILE``; tests and in-process callers may pass one.
    """

    def __init__(self, *, stop_path: str | os.PathLike[str] | None = None) -> None:
        self._signalled = False
        self._from_file = False
        self.signal_name: str | None = None
        self._file = Path(stop_path) if stop_path is not None else stop_file()
        self._previous: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        """Whether a stop was asked for (a signal arrived, or the stop file exists)."""
        if self._signalled or self._from_file:
            return True
        if self._file is not None and self._file.exists():
            with _STATE.lock:
                _STATE.spent = True
            self._from_file = True
            self.signal_name = self.signal_name or FILE_REQUEST
            return True
        return False

    @property
    def reason(self) -> str:
        """'signal SIGTERM' or 'stop request', for the ``done`` event and the log."""
        if self.signal_name == FILE_REQUEST:
            return FILE_REQUEST
        return f"signal {self.signal_name}"

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._previous[sig] = signal.signal(sig, self._handle)
        with _STATE.lock:
            _STATE.active += 1
        return self

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self._signalled:
            signal.signal(signum, self._previous.get(signum, signal.SIG_DFL))
        self._signalled = True
        if self.signal_name is None:
            self.signal_name = signal.Signals(signum).name

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        with _STATE.lock:
            _STATE.active -= 1
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()


@contextlib.contextmanager
def watch_stop_file(on_request: Callable[[], None], *, interval: float = 0.2) -> Iterator[None]:
    """While the block runs, call ``on_request`` once when the stop file appears.

    Only when no :class:`StopRequest` is active (those poll the file themselves) and the
    request is not spent. A background thread polls, so this needs no main-thread hook;
    without ``$IPV2_STOP_FILE`` nothing starts.
    """
    path = stop_file()
    if path is None:
        yield
        return
    finished = threading.Event()

    def watch() -> None:
        while not finished.wait(interval):
            if not path.exists():
                continue
            with _STATE.lock:
                if _STATE.spent:
                    return
                if _STATE.active:
                    continue
                _STATE.spent = True
            on_request()
            return

    thread = threading.Thread(target=watch, name="ipv2-stop-file", daemon=True)
    thread.start()
    try:
        yield
    finally:
        finished.set()


def announce_pid() -> None:
    """Append this process's id to ``$IPV2_PID_FILE``, so its Job can kill it directly.

    Appended, not overwritten: under torchrun every rank announces itself. A failure to
    write is ignored (the Job then falls back to the process group it started).
    """
    value = os.environ.get(PID_FILE_ENV, "")
    if not value:
        return
    with contextlib.suppress(OSError), open(value, "a", encoding="ascii") as fh:
        fh.write(f"{os.getpid()}\n")
