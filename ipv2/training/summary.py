"""The closing lines of a training run: where the model is and how to go on.

A run that ends (finished, stopped by a signal or a budget) names its best, last and
final checkpoint folders and the exact command that continues it, both as log lines for
people and as fields of the ``done`` event for panels and scripts; before, these were
only to be dug out of ``events.jsonl``.
"""

from __future__ import annotations

import math
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def resume_command(output: Path) -> str:
    """``ipv2 train --resume --output RUN``, quoted for a POSIX shell."""
    return f"ipv2 train --resume --output {shlex.quote(str(output))}"


def duration(seconds: float) -> str:
    """'2 h 5 min', '3 min 12 s' or '8 s': precise enough to plan the next run."""
    s = max(0, round(seconds))
    if s >= 3600:
        return f"{s // 3600} h {s % 3600 // 60} min"
    if s >= 60:
        return f"{s // 60} min {s % 60} s"
    return f"{s} s"


@dataclass(frozen=True)
class RunEnd:
    """How a run ended, with the folders it leaves."""

    output: Path
    reason: str | None  # None: finished all epochs
    step: int
    epoch: int
    epochs: int
    seconds: float  # wall time of this invocation
    best: Path | None
    best_mae: float
    last: Path | None  # the newest periodic checkpoint (resumable)
    final: Path | None  # the finished model (status ok only)

    def fields(self) -> dict[str, Any]:
        """The ``done`` event's checkpoint fields."""
        out: dict[str, Any] = {"resume_command": resume_command(self.output)}
        if self.best is not None:
            out["best"] = str(self.best)
        if self.last is not None:
            out["last"] = str(self.last)
        return out

    def lines(self) -> list[str]:
        """The summary for people, one fact per line."""
        if self.reason is None:
            head = f"finished: {self.epoch} epochs, {self.step} steps"
        else:
            head = (
                f"stopped ({self.reason}) at step {self.step}, epoch {self.epoch} of {self.epochs}"
            )
        lines = [f"{head} in {duration(self.seconds)}"]
        if self.final is not None:
            lines.append(f"final model: {self.final}")
        if self.best is not None:
            mae = (
                f" (validation MAE {self.best_mae:.1f} HU)" if math.isfinite(self.best_mae) else ""
            )
            lines.append(f"best checkpoint: {self.best}{mae}")
        else:
            lines.append("best checkpoint: none (no validation has finished yet)")
        if self.last is not None:
            lines.append(f"last checkpoint: {self.last}")
        command = resume_command(self.output)
        if self.reason is None:
            lines.append(f"to train longer: {command} --epochs N (N > {self.epochs})")
        else:
            lines.append(f"to continue: {command}")
        return lines
