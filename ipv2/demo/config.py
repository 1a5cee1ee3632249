"""The demo's settings and the names its models go by in metrics, report and log.

Apart from :mod:`ipv2.demo.pipeline` so that the stages it calls (the student stage,
the report) can read them without importing the pipeline back.
"""

from __future__ import annotations

from dataclasses import dataclass

from ipv2.core.errors import InputError

STRATEGIES = ("ipv1", "ipv2")
STUDENT = "ipv2-student"
STUDENT_STEPS = 1


@dataclass(frozen=True)
class DemoConfig:
    """Sizes and budgets; the defaults finish in minutes on two CPU cores."""

    size: int = 128
    slices: int = 12
    cases: int = 5  # patients: all but two train, one validates, one is the test patient
    steps: int = 1200  # training steps per denoiser (same for IPv1 and IPv2)
    weak_steps: int = 300
    batch_size: int = 8
    crop: int = 48
    base: int = 16
    mults: tuple[int, ...] = (1, 2, 2)
    sampler_steps: int = 10
    lr: float = 2e-3
    seed: int = 0
    device: str = "auto"
    threads: int = 0
    window: tuple[float, float] = (-1024.0, 1024.0)
    distill: bool = False  # also distill the IPv2-trained model into a one-step student

    def check(self) -> None:
        if self.cases < 3:
            raise InputError("the demo needs at least 3 phantom cases (train, validation, test)")
        if self.steps < 1 or self.weak_steps < 1:
            raise InputError("training steps must be at least 1")
        if self.crop > self.size:
            raise InputError(f"crop {self.crop} is larger than the phantom size {self.size}")


def model_title(name: str) -> str:
    """A model's name in the metrics rows, the report and the log."""
    if name == STUDENT:
        return f"ipv2 student ({STUDENT_STEPS} step)"
    return f"{name}-trained FFM"
