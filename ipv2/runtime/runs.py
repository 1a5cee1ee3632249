"""A training run's folder as the panel sees it: process record, event log, checkpoints.

A run outlives the panel that started it: Slicer may close while training continues
detached, or a researcher may start it from a terminal. Everything needed to attach is
therefore on disk, in the run folder, written by ``ipv2 train`` itself: ``events.jsonl``,
``process.json`` (the training process's id and command) and the checkpoints.
No Qt, no Slicer.
"""

from __future__ import annotations

import contextlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ipv2.core.errors import InputError
from ipv2.core.json_files import read_json
from ipv2.runtime.jobs import Event, parse_event, progress_fraction
from ipv2.runtime.processes import process_alive

PROCESS = "process.json"  # pid of the training process (rank 0)
EVENTS = "events.jsonl"
CHECKPOINTS = "checkpoints"


def periodic_checkpoints(output: Path) -> list[Path]:
    """Complete periodic checkpoints, oldest first (partial folders are never named step-*)."""
    folder = output / CHECKPOINTS
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob("step-*") if (p / "train_state.json").is_file())


def latest_checkpoint(output: Path) -> Path | None:
    """The newest complete periodic checkpoint."""
    found = periodic_checkpoints(output)
    return found[-1] if found else None


class EventFollower:
    """Reads events appended to a JSON-lines file since the last call (like ``tail -f``).

    A line still being written (no newline yet) is left for the next call, so a reader
    never sees half an event.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._offset = 0

    def poll(self) -> list[Event]:
        if not self.path.exists():
            return []
        with self.path.open("rb") as fh:
            fh.seek(self._offset)
            chunk = fh.read()
        end = chunk.rfind(b"\n")
        if end < 0:
            return []
        self._offset += end + 1
        events = []
        for raw in chunk[: end + 1].splitlines():
            event = parse_event(raw.decode("utf-8", errors="replace").strip())
            if event is not None:
                events.append(event)
        return events


@dataclass(frozen=True)
class RunFolder:
    """One training run's folder."""

    path: Path

    @property
    def events_path(self) -> Path:
        return self.path / EVENTS

    def process(self) -> dict[str, Any] | None:
        """``process.json``: the id and command of the process that trains (or trained)."""
        try:
            data = read_json(self.path / PROCESS, what="a training process record")
        except (FileNotFoundError, InputError):
            return None  # no record yet, or damaged: nothing to attach to
        return data if isinstance(data, dict) else None

    def running_pid(self) -> int | None:
        """The training process id if it is still running, else None."""
        record = self.process()
        if record is None or "ended" in record:
            return None
        pid = int(record.get("pid", 0))
        return pid if process_alive(pid) else None

    def events(self) -> list[Event]:
        from ipv2.runtime.jobs import read_event_log

        return read_event_log(self.events_path)

    def finished(self) -> Event | None:
        """The last ``done`` event, if the run ended (ok or stopped)."""
        done = [e for e in self.events() if e.get("event") == "done"]
        return done[-1] if done else None

    def model_for_inference(self) -> Path | None:
        """The checkpoint a user should denoise with: final, else best, else the latest."""
        for name in ("final", "best"):
            if (self.path / name / "model.json").is_file():
                return self.path / name

        return latest_checkpoint(self.path)


class TrainingRun:
    """A training process the panel started (a :class:`Job`) or re-attached to by pid.

    Both kinds answer the same questions, so the panel does not care which it holds:
    events since the last poll, running or not, progress, stop politely, kill.
    """

    def __init__(self, folder: RunFolder, job: Any | None = None, pid: int | None = None) -> None:
        self.folder = folder
        self.job = job
        self._pid = pid
        self._follower = None if job is not None else EventFollower(folder.events_path)
        self.last_progress: Event | None = None
        self.result: Event | None = None
        self.stop_requested = False

    @classmethod
    def start(cls, folder: str | os.PathLike[str], job: Any) -> TrainingRun:
        """Wrap a started ``ipv2 train`` Job whose run folder is ``folder``."""
        return cls(RunFolder(Path(folder)), job=job)

    @classmethod
    def reattach(cls, folder: str | os.PathLike[str]) -> TrainingRun:
        """Follow a run folder's event log; the process may or may not still run."""
        run_folder = RunFolder(Path(folder))
        if not run_folder.events_path.exists():
            raise InputError(f"{folder} has no events.jsonl: it is not a training run folder")
        return cls(run_folder, pid=run_folder.running_pid())

    @property
    def pid(self) -> int | None:
        """The trainer's process id: the engine itself, not a launcher in front of it."""
        if self.job is not None:
            return int(self.job.engine_pid) if self.job.engine_pid is not None else None
        return self._pid

    @property
    def running(self) -> bool:
        if self.job is not None:
            return bool(self.job.running)
        return self.pid is not None and process_alive(self.pid)

    def poll(self) -> list[Event]:
        events = self.job.poll() if self.job is not None else self._follower.poll()  # type: ignore[union-attr]
        for event in events:
            if event.get("event") == "progress":
                self.last_progress = event
            elif event.get("event") == "done":
                self.result = event
        return events

    @property
    def fraction(self) -> float:
        return progress_fraction(self.last_progress)

    def stop(self) -> None:
        """First click: finish the step, save a checkpoint, exit.

        A Job's stop-request file for a run this panel started. For a run it re-attached
        to, the file that run's ``process.json`` names (a trainer started by a Job, in
        this or an earlier Slicer session), else SIGTERM (a trainer started elsewhere).
        """
        self.stop_requested = True
        if self.job is not None:
            self.job.stop()
        elif self.pid is not None:
            path = (self.folder.process() or {}).get("stop_file")
            if path:
                try:  # its folder may be gone (a temporary one): made again, it still works
                    Path(path).parent.mkdir(parents=True, exist_ok=True)
                    Path(path).write_text("stop\n", encoding="ascii")
                    return
                except OSError:
                    pass  # not writable: a signal is all that is left
            _signal_group(self.pid, hard=False)

    def kill(self) -> None:
        """Second click: end the whole process tree now (the last checkpoint stays)."""
        if self.job is not None:
            self.job.kill()
        elif self.pid is not None:
            _signal_group(self.pid, hard=True)


def _signal_group(pid: int, hard: bool) -> None:
    import signal
    import subprocess

    if sys.platform == "win32":  # pragma: no cover
        args = ["taskkill", "/T", "/PID", str(pid)] + (["/F"] if hard else [])
        no_window = getattr(subprocess, "CREATE_NO_WINDOW", 0)  # no console flash
        subprocess.run(args, capture_output=True, check=False, creationflags=no_window)
        return
    sig = signal.SIGKILL if hard else signal.SIGTERM
    with contextlib.suppress(ProcessLookupError, PermissionError):
        # Signal the whole group only when the trainer leads it (started by a panel in
        # its own session); a run started from a terminal shares the user's group.
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
