"""How the IPv2Denoise panel concludes a denoising run that has stopped: result, cancel, failure.

The panel polls its job from a Qt timer; once the job has stopped, this decides what
the run left, with no Qt: a cancelled run (by the user, or its status) is discarded with
a line for the log and never a failure dialog; a finished one becomes a node filed under
its source (:meth:`DicomExportMixin.fileDenoised`); one that failed is discarded and
reported with the job's log tail for the dialog's details. Tested with real jobs on a
real MRML scene.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ipv2.core.errors import IPv2Error

CANCELLED = "Cancelled; nothing was written."


@dataclass(frozen=True)
class RunOutcome:
    """What a stopped run left: the denoised node, or a message (with details on failure)."""

    node: Any = None
    message: str = ""
    details: str = ""  # the job's log tail, when the run failed


def conclude_denoise(logic: Any, p: Any, run: Any, *, cancelled: bool) -> RunOutcome:
    """The outcome of the stopped ``run``; ``logic`` is the module's (finish, file, discard)."""
    status = (run.job.result or {}).get("status")
    if status == "cancelled" or cancelled:
        logic.discardDenoise(run)
        return RunOutcome(message=CANCELLED)
    try:
        node = logic.finishDenoise(run)
        logic.fileDenoised(p, node, run)
    except IPv2Error as exc:
        logic.discardDenoise(run)
        return RunOutcome(
            message=f"Denoising failed: {exc}", details="\n".join(run.job.log_tail(100))
        )
    return RunOutcome(node=node)
