"""One engine command that a panel runs in the background, as a Qt-free state machine.

The panels' timers call :meth:`BackgroundStep.poll` and show what it returns; the button
handlers call :meth:`start`, :meth:`stop` and :meth:`close`. Everything a user can see
(the log lines, the progress, the status text, what the Stop button says, whether the
step finished, failed or was stopped by the user) is decided here, where tests drive it
with real :class:`ipv2.runtime.jobs.Job` processes, and not in the module files, which
only wire widgets to these calls (issue 13: state machines out of the module files).

Stop escalates the way a user expects: the first click asks the engine to stop after its
current step (the stop-request file, which reaches the engine behind Slicer's launcher),
the second kills the process tree. A step the user stopped, killed or closed never
reports a failure: only an engine that ended on its own with an error does.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ipv2.runtime.jobs import Event, Job


@dataclass
class StepView:
    """What the panel shows after one poll."""

    log: list[str] = field(default_factory=list)  # new lines since the last poll
    fraction: float = 0.0
    status: str = ""
    stop_label: str = "Stop"
    running: bool = False
    finished: bool = False  # ended on this poll (ok, stopped, killed or failed)
    failed: bool = False  # ended on its own with an error: worth a dialog
    result: Event | None = None  # the engine's ``done`` event, if it sent one


class BackgroundStep:
    """A started command and what a user did to it: nothing, Stop, Kill, or closed."""

    def __init__(
        self, title: str, job: Job, folder: Path | None = None, *, resumable: bool = True
    ) -> None:
        self.title = title
        self.job = job
        self.folder = folder  # where the command writes, when the panel needs it later
        self.resumable = resumable  # whether a stopped command can be continued
        self.user_action: str | None = None  # "stop", "kill" or "close"
        self._reported_end = False

    @classmethod
    def start(
        cls,
        title: str,
        make_job: Callable[[], Job],
        folder: Path | None = None,
        *,
        resumable: bool = True,
    ) -> BackgroundStep:
        return cls(title, make_job().start(), folder, resumable=resumable)

    @property
    def ended(self) -> bool:
        """True once a poll has reported the end (so the panel stops polling it)."""
        return self._reported_end

    @property
    def running(self) -> bool:
        return self.job.running

    def stop(self) -> str:
        """First call: ask the engine to stop after its step; second: kill. The new status."""
        if not self.job.running:
            return "not running"
        if self.user_action is None:
            self.user_action = "stop"
            self.job.stop()
            return "stopping after the current step (click again to kill)"
        self.user_action = "kill"
        self.job.kill()
        return "killed"

    def close(self, *, stop: bool) -> None:
        """Scene close or application quit: stop the engine, or leave it running alone."""
        if not self.job.running:
            return
        self.user_action = self.user_action or "close"
        if stop:
            self.job.stop()
        else:
            self.job.detach()

    def poll(self) -> StepView:
        running, lines = self.job.drain()
        view = StepView(log=lines, fraction=self.job.fraction, running=running)
        view.result = self.job.result
        view.stop_label = "Kill" if self.user_action in ("stop", "close") else "Stop"
        if view.running:
            view.status = f"{self.title}: {self.job.status_text()}"
            if self.user_action == "stop":
                view.status += " (stopping after the current step)"
            return view
        if self._reported_end:
            view.status = self._end_status()
            return view
        self._reported_end = True
        view.finished = True
        view.failed = self.user_action is None and not self._succeeded()
        view.status = self._end_status()
        return view

    def _succeeded(self) -> bool:
        result = self.job.result or {}
        return self.job.returncode == 0 and result.get("status") in ("ok", "stopped")

    def _end_status(self) -> str:
        result: dict[str, Any] = self.job.result or {}
        if self.user_action == "kill":
            return f"{self.title}: killed; finished work is kept, resume to continue"
        if result.get("status") == "stopped" or self.user_action in ("stop", "close"):
            return f"{self.title}: stopped" + ("; resume to continue" if self.resumable else "")
        if self._succeeded():
            return f"{self.title}: finished in {self.job.elapsed:.0f} s"
        reason = self.job.error_message or (self.job.log_tail(1) or ["see the log"])[0]
        return f"{self.title}: failed ({reason})"


class StepQueue:
    """Commands run one after another (the dataset build: simulation, weak denoiser,
    dataset), shown as one task with one Cancel.

    A step that fails ends the queue (the later steps need its output); Cancel stops the
    running step (a second click kills it) and drops the rest. The steps are not
    resumable: a stopped build step removes its partial output, and Build starts over.
    """

    def __init__(
        self,
        steps: list[tuple[str, list[str]]],
        make_job: Callable[[list[str]], Job],
        folder: Path | None = None,
    ):
        if not steps:
            raise ValueError("a step queue needs at least one step")
        self._waiting = list(steps)
        self._make_job = make_job
        self.folder = folder  # what the queue builds, kept for its summary at the end
        self.total = len(steps)
        self.number = 0  # the running step's place, 1-based
        self.cancelled = False
        self.start_error: str | None = None
        self.current: BackgroundStep = self._next()

    def _next(self) -> BackgroundStep:
        label, command = self._waiting.pop(0)
        self.number += 1
        return BackgroundStep.start(label, lambda: self._make_job(command), resumable=False)

    @property
    def running(self) -> bool:
        return self.current.running or bool(self._waiting)

    @property
    def completed(self) -> bool:
        """Every step ran to the end with status ok (not cancelled, failed or stopped)."""
        result = self.current.job.result or {}
        return (
            not self.cancelled
            and self.start_error is None
            and not self._waiting
            and not self.current.running
            and self.current.user_action is None
            and result.get("status") == "ok"
        )

    def cancel(self) -> str:
        self.cancelled = True
        self._waiting.clear()
        return self.current.stop()

    def close(self, *, stop: bool) -> None:
        self.cancelled = True
        self._waiting.clear()
        self.current.close(stop=stop)

    def poll(self) -> StepView:
        view = self.current.poll()
        view.stop_label = "Kill" if view.stop_label == "Kill" else "Cancel"
        prefix = f"Step {self.number} of {self.total}: " if self.total > 1 else ""
        view.status = prefix + view.status
        view.fraction = (self.number - 1 + view.fraction) / self.total
        if not view.finished:
            return view
        result = view.result or {}
        ok = not view.failed and self.current.user_action is None and result.get("status") == "ok"
        if not ok or not self._waiting:
            self._waiting.clear()  # a failed or stopped step ends the queue
            return view
        try:
            self.current = self._next()
        except Exception as exc:  # the next command could not even start
            self._waiting.clear()
            self.start_error = str(exc)
            view.failed = True
            view.status = f"Step {self.number} of {self.total} could not start: {exc}"
            return view
        return StepView(
            log=view.log,
            fraction=(self.number - 1) / self.total,
            running=True,
            stop_label="Cancel",
            status=f"Step {self.number} of {self.total}: {self.current.title}...",
        )
