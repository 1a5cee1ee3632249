"""IPv2Denoise's background work (denoising, purified volumes, the IPv2 fusion preview) as
one Qt-free state machine.

Each of these runs an engine command as a :class:`ipv2.runtime.jobs.Job`, so Slicer's
GUI stays responsive, and ends by loading what the command wrote into the scene. The
panel keeps one task at a time: its timer calls :meth:`EngineTask.poll` and shows the
returned :class:`TaskView`; Cancel and scene close call :meth:`cancel` and :meth:`close`.
What the user sees at the end is decided here, where tests drive it with real jobs and a
real MRML scene (issue 13): a task the user cancelled or whose scene closed is
discarded with a log line and never a failure dialog; one that finished is loaded; one
that failed on its own is discarded and reported with the job's log tail.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ipv2.core.errors import IPv2Error
from ipv2.runtime.jobs import Job

CANCELLED = "Cancelled; nothing was written."
CANCEL_GRACE_S = 10.0  # after a stop request, the engine is killed if still running


@dataclass(frozen=True)
class RunOutcome:
    """What an ended task left: its result, or a message (with details on failure)."""

    node: Any = None  # the loaded result (a node, or a dict of nodes for purified volumes)
    message: str = ""
    details: str = ""  # the job's log tail, when the task failed

    @property
    def failed(self) -> bool:
        return bool(self.details)


@dataclass
class TaskView:
    """What the panel shows after one poll."""

    log: list[str] = field(default_factory=list)  # new lines since the last poll
    fraction: float = 0.0
    status: str = ""
    running: bool = True
    outcome: RunOutcome | None = None  # set once, on the poll that saw the end

    @property
    def finished(self) -> bool:
        return self.outcome is not None


class EngineTask:
    """A started engine job plus how to load its result and how to throw its files away.

    ``kind`` tells the panel what to do with the result ("denoise", "volumes",
    "preview"); ``load`` turns the finished job's files into nodes; ``discard`` removes
    the job's work folder (it holds copies of the patient's volumes). ``sources`` are the
    uLDCT and NDCT nodes the task was started from: the selectors stay usable while it
    runs, so the result is shown beside these, not beside whatever is selected at the end.
    """

    def __init__(
        self,
        kind: str,
        title: str,
        job: Job | None,
        *,
        load: Callable[[], Any],
        discard: Callable[[], None],
        sources: tuple[Any, Any] = (None, None),
    ) -> None:
        self.kind = kind
        self.title = title
        self.job = job
        self._load = load
        self._discard = discard
        self._sources = sources
        self.cancelled = False
        self._ended = False

    @classmethod
    def finished(
        cls, kind: str, result: Any, *, sources: tuple[Any, Any] = (None, None)
    ) -> EngineTask:
        """Work that was quick enough to do at once: the first poll hands over ``result``."""
        return cls(kind, "", None, load=lambda: result, discard=lambda: None, sources=sources)

    @property
    def sources(self) -> tuple[Any, Any]:
        """The (uLDCT, NDCT) it was started from; None for one deleted meanwhile."""
        uldct, ndct = (node if _in_a_scene(node) else None for node in self._sources)
        return uldct, ndct

    @property
    def running(self) -> bool:
        return not self._ended

    def cancel(self) -> str:
        """First call: ask the engine to stop (killed after a grace period); second: kill."""
        if self.job is None or not self.job.running:
            return ""
        if not self.cancelled:
            self.cancelled = True
            self.job.cancel(grace=CANCEL_GRACE_S)
            return f"Cancelling {self.title.lower()}..."
        self.job.kill()
        return "Killed."

    def close(self) -> None:
        """Scene close or module cleanup: a cancel that nobody waits for."""
        self.cancel()
        if not self._ended:
            self._ended = True
            if self.job is not None:
                self.job.kill()
            self._discard()

    def poll(self) -> TaskView:
        if self._ended:
            return TaskView(running=False, status=f"{self.title}: ended")
        job = self.job
        if job is None:  # finished at once (its load only hands the result over)
            self._ended = True
            return TaskView(fraction=1.0, running=False, outcome=RunOutcome(node=self._load()))
        running, lines = job.drain()
        view = TaskView(log=lines, fraction=job.fraction, running=running)
        if running:
            view.status = f"{self.title}: {job.status_text()}"
            return view
        self._ended = True
        try:
            view.outcome = self._conclude(job)
        except Exception as exc:  # even a failing clean-up must end the task visibly
            view.outcome = RunOutcome(
                message=f"{self.title} failed: {type(exc).__name__}: {exc}",
                details=traceback.format_exc(),
            )
        view.status = f"{self.title}: {view.outcome.message}"
        if view.outcome.node is not None:
            view.fraction = 1.0
        return view

    def _conclude(self, job: Job) -> RunOutcome:
        status = (job.result or {}).get("status")
        if self.cancelled or status in ("cancelled", "stopped"):
            self._discard()
            return RunOutcome(message=CANCELLED)
        try:
            if job.returncode != 0 or status != "ok":
                reason = job.error_message or "\n".join(job.log_tail(5))
                raise IPv2Error(reason or f"the engine exited with code {job.returncode}")
            result = self._load()
        except Exception as exc:  # any failure to load ends the task with its details
            self._discard()
            reason = str(exc) if isinstance(exc, IPv2Error) else f"{type(exc).__name__}: {exc}"
            trace = "" if isinstance(exc, IPv2Error) else traceback.format_exc()
            return RunOutcome(
                message=f"{self.title} failed: {reason}",
                details="\n".join([*job.log_tail(100), trace]).strip() or reason,
            )
        return RunOutcome(node=result, message=f"finished in {job.elapsed:.0f} s")


def _in_a_scene(node: Any) -> bool:
    """A node still in its scene: a removed node keeps its Python object, not its scene."""
    return node is not None and node.GetScene() is not None
