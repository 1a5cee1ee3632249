"""The postponing signal handler in-process: import detection, no waiting, nothing lost.

``test_faults_signals.py`` runs real stops against child processes; these tests pin the
handler's own rules, which a child process can only hit by chance: it never blocks or
starts a thread (Python re-enters a handler when a second signal arrives during a wait
inside the first; a first version deadlocked on its own lock that way, 8 runs in 60 with
two signals 0.5-4 ms apart), and a request postponed when the work ends is handled by
``close`` rather than dropped.
"""

from __future__ import annotations

import importlib
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

import pytest

from ipv2.cli.import_safe_signals import ImportSafeHandler, importing


@pytest.fixture
def import_frame(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FrameType:
    """A frame of module code captured while that module was being imported."""
    (tmp_path / "frame_during_import.py").write_text("import sys\nFRAME = sys._getframe()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "frame_during_import", raising=False)
    module = importlib.import_module("frame_during_import")
    return module.FRAME  # type: ignore[no-any-return]


class Sent:
    """Records what the helper sends instead of signalling the test process."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, int]] = []
        self.arrived = threading.Event()

    def __call__(self, thread_id: int, signum: int) -> None:
        self.calls.append((thread_id, signum))
        self.arrived.set()


def test_importing_is_true_only_below_the_import_machinery(import_frame: FrameType) -> None:
    assert importing(import_frame)
    assert not importing(sys._getframe())
    assert not importing(None)


def test_a_signal_during_an_import_is_postponed_without_waiting(import_frame: FrameType) -> None:
    calls: list[int] = []
    guard = ImportSafeHandler(lambda signum, frame: calls.append(signum), send=Sent())
    try:
        threads = set(threading.enumerate())
        returned = threading.Event()

        def deliver() -> None:
            guard(signal.SIGTERM, import_frame)
            guard(signal.SIGTERM, import_frame)  # a second one, as if it re-entered
            returned.set()

        with guard._lock:  # the helper in the middle of sending: the handler must not wait
            caller = threading.Thread(target=deliver, daemon=True)
            caller.start()
            assert returned.wait(10), "the handler waited on the helper's lock"
            caller.join()
            assert calls == []
            assert guard.postponed == (signal.SIGTERM, signal.SIGTERM)
        assert set(threading.enumerate()) <= threads  # and started no thread
    finally:
        guard.close()


def test_close_handles_a_postponed_request_once_and_then_passes_signals_on(
    import_frame: FrameType,
) -> None:
    calls: list[tuple[int, FrameType | None]] = []
    sent = Sent()
    guard = ImportSafeHandler(lambda signum, frame: calls.append((signum, frame)), send=sent)
    with guard._lock:  # the helper cannot send them before close() (as at the end of work)
        guard(signal.SIGTERM, import_frame)
        guard(signal.SIGTERM, import_frame)
        guard(signal.SIGINT, import_frame)
        guard._closed.set()
    guard.close()
    assert sent.calls == []
    assert calls == [(signal.SIGTERM, None), (signal.SIGINT, None)]
    assert guard.postponed == ()
    guard(signal.SIGTERM, import_frame)  # after close: straight to the handler
    assert calls[-1] == (signal.SIGTERM, import_frame)


def test_a_signal_outside_an_import_goes_straight_to_the_handler() -> None:
    calls: list[int] = []
    guard = ImportSafeHandler(lambda signum, frame: calls.append(signum), send=Sent())
    try:
        guard(signal.SIGTERM, sys._getframe())
        assert calls == [signal.SIGTERM]
        assert guard.postponed == ()
    finally:
        guard.close()


def test_a_postponed_signal_is_sent_to_the_main_thread_once_it_has_left_the_import(
    import_frame: FrameType,
) -> None:
    """The import of ``import_frame`` is over, so the helper sends at its next look."""
    sent = Sent()
    guard = ImportSafeHandler(lambda signum, frame: None, send=sent)
    try:
        with guard._lock:  # both arrive before the helper can take either
            guard(signal.SIGTERM, import_frame)
            guard(signal.SIGTERM, import_frame)
        assert sent.arrived.wait(10), "the postponed signal was never sent again"
    finally:
        guard.close()
    assert sent.calls == [(threading.main_thread().ident, signal.SIGTERM)]  # once, not twice
    assert guard.postponed == ()
