"""A training run as IPv2Train follows it, as a Qt-free state machine.

The panel's timer calls :meth:`RunWatch.poll` and shows the :class:`StepView` it gets;
its Stop button calls :meth:`RunWatch.stop`. The run's events feed the live curve here,
the status line and the Stop/Kill escalation are decided here, and the end of the run is
reported exactly once, so tests drive all of it with a real ``ipv2 train`` child and a
real MRML curve (Testing/test_panel_state_machines.py) and the module file only wires
widgets.
"""

from __future__ import annotations

from ipv2.runtime.runs import TrainingRun
from ipv2.slicer.background_step import StepView
from ipv2.slicer.curves import TrainingCurve


def run_status(run: TrainingRun) -> str:
    """'running: step 40 of 500, epoch 3' (or the run's end status instead of running)."""
    p = run.last_progress or {}
    state = "running" if run.running else (run.result or {}).get("status", "ended")
    return f"{state}: step {p.get('done', 0)} of {p.get('total', '?')}, epoch {p.get('epoch', 0)}"


class RunWatch:
    """One training run (started or re-attached) and its curve, polled by the panel."""

    def __init__(self, run: TrainingRun, curve: TrainingCurve) -> None:
        self.run = run
        self.curve = curve
        self.killed = False
        self._reported_end = False

    def stop(self) -> tuple[str, str]:
        """First click: stop after the step with a checkpoint; second: kill. The status
        line and the button's new label."""
        if not self.run.stop_requested:
            self.run.stop()
            return "Stopping after the current step...", "Kill"
        self.run.kill()
        self.killed = True
        return "Killed; the last checkpoint is kept.", "Kill"

    def poll(self) -> StepView:
        running = self.run.running
        if not running and self.run.job is not None:
            self.run.job.wait(timeout=5.0)  # join the readers: the last events (done) too
        events = self.run.poll()
        self.curve.add(events)
        view = StepView(
            log=[str(e.get("message", "")) for e in events if e.get("event") in ("log", "error")],
            fraction=self.run.fraction,
            running=running,
            result=self.run.result,
            stop_label="Kill" if self.run.stop_requested else "Stop",
        )
        view.status = run_status(self.run)
        if self.killed:
            view.status = "Killed; the last checkpoint is kept."
        if view.running or self._reported_end:
            return view
        self._reported_end = True
        view.finished = True
        job = self.run.job
        ended_badly = job is not None and job.returncode not in (0, None)
        view.failed = ended_badly and not (self.run.stop_requested or self.killed)
        if view.failed and job is not None:
            view.status = f"failed: {job.error_message or 'see the log'}"
        return view
