"""IPv2Train's "Make a fast model" step: the ``ipv2 distill`` command for a finished run.

A model sampled in 10 steps is the slow part of denoising on a workstation without a
CUDA GPU; a one-step student of it (``ipv2 distill``, :mod:`ipv2.training.distill`) is
about 10x faster per slice. The panel offers it right after training, on the run it just
watched: the teacher is that run's model, the data the dataset the run trained on (read
from the run's own ``config.json``, not from the panel, whose fields may have changed
since), and the student's run folder a new sibling of the teacher's.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ipv2.core.errors import InputError
from ipv2.core.json_files import read_json_object

STUDENT_BASE = 16  # the student FFM's width: base 16 costs ~1/16 of base 64's FLOPs
STUDENT_STEPS = 1


@dataclass(frozen=True)
class FastModelPlan:
    """One distillation, as the panel starts it."""

    teacher: Path
    data: Path
    out: Path
    device: str = "auto"
    epochs: int = 200
    batch_size: int = 2
    lr: float = 1e-4
    crop: int = 0

    def command(self) -> list[str]:
        """The ``ipv2 distill`` arguments (without the Python prefix)."""
        cmd = ["distill", "--teacher", str(self.teacher), "--data", str(self.data)]
        cmd += ["--out", str(self.out), "--base", str(STUDENT_BASE), "--steps", str(STUDENT_STEPS)]
        cmd += ["--epochs", str(self.epochs), "--batch-size", str(self.batch_size)]
        cmd += ["--lr", str(self.lr), "--device", self.device]
        if self.crop:
            cmd += ["--crop", str(self.crop)]
        return cmd


def plan_fast_model(
    run_folder: str | os.PathLike[str], teacher: str | os.PathLike[str] | None, **settings: Any
) -> FastModelPlan:
    """The distillation of ``teacher`` (the run's model) on the data the run trained on."""
    run = Path(run_folder)
    if teacher is None:
        raise InputError(f"{run} holds no finished model yet: train it first")
    try:
        config = read_json_object(run / "config.json", what="a training run's settings")
    except FileNotFoundError:
        raise InputError(f"{run} has no config.json: it is not a training run folder") from None
    data = config.get("data")
    if not data or not Path(str(data)).exists():
        raise InputError(
            f"the dataset {data!r} that {run} trained on is gone; a fast model learns from "
            "the same dataset: rebuild it there, or run ipv2 distill with --data"
        )
    return FastModelPlan(
        teacher=Path(teacher), data=Path(str(data)), out=new_sibling(run), **settings
    )


def new_sibling(run: Path, suffix: str = "fast") -> Path:
    """``<run>-fast``, or ``<run>-fast-2``... : the first name not taken (never reused)."""
    candidate = run.with_name(f"{run.name}-{suffix}")
    n = 2
    while candidate.exists():
        candidate = run.with_name(f"{run.name}-{suffix}-{n}")
        n += 1
    return candidate


def student_of(result: dict[str, Any] | None) -> Path | None:
    """The student model a finished ``ipv2 distill`` reported, if it finished."""
    if not result or result.get("status") != "ok" or not result.get("student"):
        return None
    path = Path(str(result["student"]))
    return path if (path / "model.json").is_file() else None


def resumable(out: str | os.PathLike[str]) -> bool:
    """A distillation folder that stopped before its student was finished."""
    folder = Path(out)
    return (folder / "distill.json").is_file() and not (
        folder / "student" / "final" / "model.json"
    ).is_file()
