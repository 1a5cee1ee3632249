"""Long engine work as a child process, watched without blocking (no Qt needed).

The Slicer panels must never freeze, and a crash or a cancel in heavy GPU work must not
take Slicer down with it. So inference and training run as ``python -m ipv2 <command>
... --events jsonl`` in a child process; a :class:`Job` starts it, reads its JSON-lines
events on background threads into a queue, and lets the caller ``poll()`` from a timer.
Cancelling ends the whole process tree (torchrun workers, data loaders), politely first
and by force after a grace period.

Whoever launches it. Inside Slicer the child is ``PythonSlicer``, a CTK launcher that
starts ``python-real`` with ``QProcess::start`` (same process group on POSIX), waits for
it, installs no signal handler and forwards no signal (commontk/AppLauncher
``Base/ctkAppLauncher.cpp``, ``runProcess``/``applicationFinished``; configured by Slicer's
``SuperBuild/python_configure_python_launcher.cmake``). A SIGTERM to the launcher would
kill it alone: the Job would look finished while the trainer still ran and saved. So:

- Stop writes a stop-request file (``$IPV2_STOP_FILE``) that the engine polls
  (``runtime.stop_requests``); it sends no signal to a launcher;
- the engine writes its own pid(s) into ``$IPV2_PID_FILE``; Kill ends the process group
  the Job started (POSIX: own session; Windows: the process tree) and then every engine
  pid directly, so an engine a launcher detached or orphaned dies too;
- on Windows no console window opens per job (``CREATE_NO_WINDOW``).
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from ipv2.runtime.processes import process_alive
from ipv2.runtime.stop_requests import PID_FILE_ENV, STOP_FILE_ENV

Event = dict[str, Any]

_WINDOWS = sys.platform == "win32"


class Job:
    """A child process that speaks the engine's JSON-lines events.

    ``poll()`` returns the events that arrived since the last call and never blocks.
    Lines that are not JSON events (library warnings, tracebacks) become ``log`` events
    with level ``output`` or ``stderr``; nothing a child prints can crash the reader.
    """

    def __init__(
        self,
        argv: Sequence[str],
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        log_lines: int = 400,
    ) -> None:
        self.argv = [str(a) for a in argv]
        self.env = dict(env) if env is not None else None
        self.cwd = str(cwd) if cwd is not None else None
        self._queue: queue.Queue[Event] = queue.Queue()
        self._log: collections.deque[str] = collections.deque(maxlen=log_lines)
        self._lock = threading.Lock()
        self._process: subprocess.Popen[str] | None = None
        self._readers: list[threading.Thread] = []
        self.last_progress: Event | None = None
        self.result: Event | None = None
        self.error_message: str | None = None
        self.started_at: float | None = None
        self._detached = False
        self._control: Path | None = None  # holds the stop-request and pid files

    @classmethod
    def engine(
        cls,
        command: Sequence[str],
        python: str | os.PathLike[str] | None = None,
        env: Mapping[str, str] | None = None,
        *,
        cwd: str | os.PathLike[str] | None = None,
        launcher: Sequence[str] = (),
    ) -> Job:
        """A job running ``python [LAUNCHER] -m ipv2 COMMAND... --events jsonl``.

        ``python`` defaults to the running interpreter; inside Slicer pass Slicer's own
        Python launcher so the child sees the same packages. ``launcher`` inserts module
        arguments before ``-m ipv2``, e.g. torchrun's for multi-GPU training.
        """
        exe = str(python) if python is not None else sys.executable
        merged = dict(os.environ if env is None else env)
        merged.setdefault("PYTHONUNBUFFERED", "1")
        # The child must import the same engine the caller imported.
        engine_root = str(Path(__file__).resolve().parents[1])
        path = merged.get("PYTHONPATH", "")
        if engine_root not in path.split(os.pathsep):
            merged["PYTHONPATH"] = engine_root + (os.pathsep + path if path else "")
        argv = [exe, *launcher, "-m", "ipv2", *command, "--events", "jsonl"]
        return cls(argv, env=merged, cwd=cwd)

    # -- lifecycle -----------------------------------------------------------------

    def start(self) -> Job:
        if self._process is not None:
            raise RuntimeError("job already started")
        kwargs = popen_options()
        self._control = Path(tempfile.mkdtemp(prefix="ipv2-job-"))
        env = dict(os.environ if self.env is None else self.env)
        env[STOP_FILE_ENV] = str(self._control / "stop")
        env[PID_FILE_ENV] = str(self._control / "engine.pid")
        self._process = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            errors="replace",
            bufsize=1,
            env=env,
            cwd=self.cwd,
            **kwargs,
        )
        self.started_at = time.monotonic()
        assert self._process.stdout is not None and self._process.stderr is not None
        for stream, parse in ((self._process.stdout, True), (self._process.stderr, False)):
            reader = threading.Thread(target=self._read, args=(stream, parse), daemon=True)
            reader.start()
            self._readers.append(reader)
        return self

    @property
    def pid(self) -> int | None:
        """The process the Job started (a launcher such as PythonSlicer, or the engine)."""
        return self._process.pid if self._process is not None else None

    @property
    def engine_pids(self) -> list[int]:
        """The engine processes that announced themselves (empty before they start).

        Under a launcher these are its children; under torchrun, one per rank.
        """
        if self._control is None:
            return []
        try:
            text = (self._control / "engine.pid").read_text(encoding="ascii")
        except OSError:
            return []
        return [int(word) for word in text.split() if word.isdigit()]

    @property
    def engine_pid(self) -> int | None:
        """The (first) engine process's id, else the started process's."""
        pids = self.engine_pids
        return pids[0] if pids else self.pid

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def returncode(self) -> int | None:
        return self._process.poll() if self._process is not None else None

    @property
    def elapsed(self) -> float:
        return 0.0 if self.started_at is None else time.monotonic() - self.started_at

    @property
    def fraction(self) -> float:
        """Share of the work done, from the last progress event (0 before any)."""
        return progress_fraction(self.last_progress)

    def remaining_seconds(self) -> float | None:
        """A linear estimate of the time left; None until there is progress to go on."""
        f = self.fraction
        return self.elapsed * (1.0 - f) / f if f > 0 else None

    def status_text(self) -> str:
        """'Elapsed 12 s, about 30 s left' for a progress label."""
        left = self.remaining_seconds()
        tail = f", about {left:.0f} s left" if left is not None else ""
        return f"Elapsed {self.elapsed:.0f} s{tail}"

    def poll(self) -> list[Event]:
        """Events received since the last call (non-blocking; safe from a GUI timer)."""
        events: list[Event] = []
        while True:
            try:
                events.append(self._queue.get_nowait())
            except queue.Empty:
                return events

    def drain(self) -> tuple[bool, list[str]]:
        """(still running, the log and error messages since the last call): a panel's poll.

        Once the process has exited, its reader threads are joined first: they may still
        hold its last lines (the done event among them), and a success read too early
        would show as a failure.
        """
        running = self.running
        if not running:
            self.wait(timeout=5.0)
        events = self.poll()
        return running, [
            str(e.get("message", "")) for e in events if e.get("event") in ("log", "error")
        ]

    def wait(self, timeout: float | None = None) -> int:
        """Block until the process exits and its output is read; the exit status."""
        if self._process is None:
            raise RuntimeError("job not started")
        code = self._process.wait(timeout=timeout)
        for reader in self._readers:
            reader.join(timeout=5.0)
        return code

    def stop(self) -> None:
        """Ask politely: write the stop-request file the engine polls.

        The engine's long commands then finish the current step, save what they have and
        exit with a ``done`` event whose status is ``stopped``; the others unwind as on
        SIGTERM. No signal goes to a launcher in between (it would die alone, see the
        module docstring). Only a child that has not announced an engine pid (not the
        engine, or not yet watching) also gets SIGTERM to its process group on POSIX.
        """
        if not self.running:
            return
        assert self._process is not None and self._control is not None
        with contextlib.suppress(OSError):
            (self._control / "stop").write_text("stop\n", encoding="ascii")
        if _WINDOWS or self.engine_pids:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._process.pid, signal.SIGTERM)  # own session: pgid == pid

    def kill(self) -> None:
        """Force: kill the started process tree, then every engine process it ran.

        POSIX: SIGKILL to the Job's own session (the launcher and, with QProcess, its
        child), then to each announced engine pid's group or the pid itself.
        Windows: ``taskkill /T /F`` on the started process and on each engine pid. A Job
        Object would catch every descendant, but ``subprocess`` cannot start a process
        suspended, so a launcher could spawn its child before the assignment; with the
        stop file no launcher is killed early, so the tree taskkill walks stays intact,
        and the engine pids cover an orphaned engine.
        """
        if self._process is None:
            return
        engines = [p for p in self.engine_pids if p != self._process.pid and process_alive(p)]
        if _WINDOWS:
            for pid in [self._process.pid, *engines]:
                subprocess.run(
                    ["taskkill", "/T", "/F", "/PID", str(pid)],
                    capture_output=True,
                    check=False,
                    creationflags=CREATE_NO_WINDOW,
                )
            return
        try:
            os.killpg(self._process.pid, signal.SIGKILL)  # the group outlives its leader
        except ProcessLookupError:
            pass
        except PermissionError:
            self._process.kill()
        own_group = os.getpgrp()
        for pid in engines:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                group = os.getpgid(pid)
                if group == pid and group != own_group:
                    os.killpg(group, signal.SIGKILL)  # an engine in a session of its own
                else:
                    os.kill(pid, signal.SIGKILL)

    def cancel(self, grace: float = 5.0, block: bool = False) -> None:
        """Stop, then kill whatever still runs after ``grace`` seconds.

        By default the escalation happens on a background thread so a GUI stays
        responsive; ``block=True`` waits for the end (scripts, tests).
        """
        self.stop()

        def escalate() -> None:
            assert self._process is not None
            try:
                self._process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.kill()
            # Children can outlive the leader (it exits on SIGTERM while a worker
            # ignores it): always clear the group.
            if not _WINDOWS:
                self.kill()

        if self._process is None:
            return
        if block:
            escalate()
            self.wait()
        else:
            threading.Thread(target=escalate, daemon=True).start()

    def detach(self) -> None:
        """Stop collecting events for a process left running on its own.

        The pipes are still drained (a child blocked on a full pipe would stall), but
        nothing accumulates any more; the run's ``events.jsonl`` keeps its record.
        """
        self._detached = True
        self.poll()

    def log_tail(self, lines: int = 50) -> list[str]:
        with self._lock:
            return list(self._log)[-lines:]

    # -- reading -------------------------------------------------------------------

    def _read(self, stream: IO[str], parse: bool) -> None:
        try:
            self._read_lines(stream, parse)
        finally:
            if parse:
                self._clean_up()

    def _clean_up(self) -> None:
        """Remove the control folder once the process ended (a stale pid file could name
        a reused pid)."""
        if self._process is None or self._control is None:
            return
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._process.wait(timeout=60)
            if not any(process_alive(pid) for pid in self.engine_pids):
                shutil.rmtree(self._control, ignore_errors=True)

    def _read_lines(self, stream: IO[str], parse: bool) -> None:
        for raw in stream:
            line = raw.rstrip("\r\n")
            if not line:
                continue
            event = parse_event(line) if parse else None
            if event is None:
                event = {"event": "log", "level": "output" if parse else "stderr", "message": line}
            self._remember(event)
            if not self._detached:
                self._queue.put(event)
        stream.close()

    def _remember(self, event: Event) -> None:
        kind = event.get("event")
        with self._lock:
            if kind == "log":
                self._log.append(str(event.get("message", "")))
            elif kind == "error":
                self._log.append(f"error: {event.get('message', '')}")
        if kind == "progress":
            self.last_progress = event
        elif kind == "done":
            self.result = event
        elif kind == "error":
            self.error_message = str(event.get("message", ""))


# Windows process creation flags (values from the Win32 API; subprocess has them on Windows only).
CREATE_NEW_PROCESS_GROUP = getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0x00000200)
CREATE_NO_WINDOW = getattr(subprocess, "CREATE_NO_WINDOW", 0x08000000)


def popen_options(windows: bool = _WINDOWS) -> dict[str, Any]:
    """How a job's process is created.

    Windows: no console window per job (slicer.util.launchConsoleProcess hides one with
    STARTUPINFO SW_HIDE; CREATE_NO_WINDOW creates none, so nothing flashes), in a new
    group so console Ctrl events of the parent never reach the job. Elsewhere: its own
    session and process group, so the tree dies together.
    """
    if windows:
        return {"creationflags": CREATE_NEW_PROCESS_GROUP | CREATE_NO_WINDOW}
    return {"start_new_session": True}


def progress_fraction(event: Event | None) -> float:
    """done / total of a progress event, clamped to [0, 1]; 0 without one."""
    if not event or not event.get("total"):
        return 0.0
    return float(min(1.0, max(0.0, event["done"] / event["total"])))


def parse_event(line: str) -> Event | None:
    if not line.startswith("{"):
        return None
    try:
        value = json.loads(line)
    except json.JSONDecodeError:
        return None
    if isinstance(value, dict) and isinstance(value.get("event"), str):
        return value
    return None


def read_event_log(path: str | os.PathLike[str]) -> list[Event]:
    """Events from an ``events.jsonl`` file, skipping lines a crash left half-written."""
    events: list[Event] = []
    p = Path(path)
    if not p.exists():
        return events
    with p.open(encoding="utf-8", errors="replace") as fh:
        for line in fh:
            event = parse_event(line.strip())
            if event is not None:
                events.append(event)
    return events
