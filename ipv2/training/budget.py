"""How often to validate and checkpoint, from what this device measured.

Validation runs the full sampler on whole slices, which on a CPU costs as much as
hundreds of training steps per slice: a fixed "32 slices every epoch" left a CPU user
watching a silent bar for minutes after every few steps. So what the user did not set is
sized from two measurements, the mean training step and one validation slice, to keep
validation near a fixed share of wall time (``SHARE``). Explicit ``--val-every`` and
``--val-limit`` always win; the other is fitted around them.

Checkpoints follow a clock rather than epochs by default: tiny epochs would otherwise
write a folder every few steps, huge ones leave hours unsaved.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

SHARE = 0.2  # target share of wall time spent validating
MAX_SLICES = 32  # most validation slices chosen automatically (the old fixed default)
MIN_SLICES = 4  # fewest chosen automatically: fewer make "best" a coin toss
MAX_INTERVAL_S = 600.0  # aim to validate at least this often (seconds of training)


@dataclass(frozen=True)
class ValidationPlan:
    """What validation does for the rest of this invocation, and why."""

    every: int  # epochs between validations
    slices: int  # slices per validation
    available: int  # slices in the validation split
    slice_seconds: float  # measured cost of one slice
    epoch_seconds: float  # measured training time of one epoch
    chosen: tuple[str, ...]  # which of "every", "slices" were chosen here (not given)

    @property
    def seconds(self) -> float:
        """Estimated seconds per validation."""
        return self.slices * self.slice_seconds

    @property
    def share(self) -> float:
        """Estimated share of wall time spent validating."""
        train = self.every * self.epoch_seconds
        return self.seconds / max(train + self.seconds, 1e-9)

    def describe(self) -> str:
        """One log line: what was chosen, from which measurements, and how to override."""

        def how(name: str) -> str:
            return "chosen" if name in self.chosen else "as given"

        epochs = "epoch" if self.every == 1 else f"{self.every} epochs"
        line = (
            f"validation: {self.slices} of {self.available} slices ({how('slices')}) every "
            f"{epochs} ({how('every')}); measured {self.slice_seconds:.2f} s per slice and "
            f"{self.epoch_seconds:.2f} s per training epoch, so about {self.seconds:.0f} s "
            f"per validation, {100 * self.share:.0f}% of wall time"
        )
        if self.chosen:
            line += " (--val-every and --val-limit choose them instead)"
        return line


def plan_validation(
    *,
    available: int,
    slice_seconds: float,
    epoch_seconds: float,
    every: int | None,
    limit: int | None,
    epochs_left: int,
) -> ValidationPlan:
    """Fit the unset ``every`` (epochs) and ``limit`` (slices) to ``SHARE`` of wall time.

    ``every`` or ``limit`` not None were given by the user and are kept (``limit`` 0 means
    all slices). Without either, the interval aims at one validation per
    ``MAX_INTERVAL_S`` of training (and within the epochs left), the slice count is what
    that interval affords (``MIN_SLICES`` to ``MAX_SLICES``), and the interval is then
    widened until that count fits the share: the share wins over frequency.
    """
    ratio = SHARE / (1.0 - SHARE)  # validation seconds allowed per training second
    slice_s = max(slice_seconds, 1e-6)
    epoch_s = max(epoch_seconds, 1e-6)
    cap = max(1, min(MAX_SLICES, available))
    chosen: list[str] = []
    if limit is not None:
        slices = available if limit == 0 else max(1, min(limit, available))
    else:
        chosen.append("slices")
        if every is not None and every > 0:
            affordable = math.floor(ratio * every * epoch_s / slice_s)
            slices = min(cap, max(1, affordable))
        else:
            target = max(1, min(math.floor(MAX_INTERVAL_S / epoch_s), max(1, epochs_left)))
            affordable = math.floor(ratio * target * epoch_s / slice_s)
            slices = min(cap, max(min(MIN_SLICES, cap), affordable))
    if every is None:
        chosen.append("every")
        every = max(1, math.ceil(slices * slice_s / (ratio * epoch_s)))
    return ValidationPlan(
        every=every,
        slices=slices,
        available=available,
        slice_seconds=slice_seconds,
        epoch_seconds=epoch_seconds,
        chosen=tuple(chosen),
    )


@dataclass(frozen=True)
class CheckpointCadence:
    """When periodic checkpoints are written (besides at every stop and at the end).

    ``every_epochs`` (``--checkpoint-every``) replaces the clock; ``every_steps``
    (``--checkpoint-every-steps``) adds to whichever applies. The default clock writes
    one at the first epoch end of each invocation (an early proof that saving works, and
    a model to try), then whenever ``minutes`` have passed since the last one.
    """

    every_epochs: int | None
    every_steps: int
    minutes: float

    def due(
        self, *, step: int, epoch_ended: int | None, since_last_s: float, saved_yet: bool
    ) -> bool:
        """Whether to checkpoint after ``step``; ``epoch_ended`` is the epoch count if one just ended."""
        if self.every_steps and step % self.every_steps == 0:
            return True
        if self.every_epochs is not None:
            return epoch_ended is not None and epoch_ended % self.every_epochs == 0
        if epoch_ended is not None and not saved_yet:
            return True
        return since_last_s >= 60.0 * self.minutes

    def describe(self, keep: int) -> str:
        """One log line for the start of a run."""
        if self.every_epochs is not None:
            when = "every epoch" if self.every_epochs == 1 else f"every {self.every_epochs} epochs"
        else:
            when = f"at the first epoch end, then every {self.minutes:g} min"
        if self.every_steps:
            when += f" and every {self.every_steps} steps"
        return (
            f"checkpoints: {when}, at a stop and at the end; keeping the last {keep} plus the best"
        )
