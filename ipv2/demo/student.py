"""The demo's optional last stage (``ipv2 demo --distill``): a one-step student of the
IPv2-trained model, and whether it keeps its teacher's accuracy.

A one-step student is worth having only if the speed costs no accuracy that matters, so
the demo measures it the way it measures the teachers: per region against the phantom's
truth. The bar is issue 15's: the student's RMSE within 10% of its teacher's in every
region (background, body, lung). The student trains for ``DISTILL_BUDGET`` times the
teacher's budget (the demo's ``steps``, as whole epochs over the same slices) through
:func:`ipv2.training.distill.distill`, so the demo exercises exactly what
``ipv2 distill`` runs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ipv2.core.errors import IPv2Error
from ipv2.core.events import Reporter
from ipv2.demo.checks import REGIONS, Check
from ipv2.demo.config import STUDENT_STEPS, DemoConfig

STUDENT_VS_TEACHER = 1.10  # each region's RMSE at most this multiple of the teacher's
# The student's training steps, in multiples of the teacher's. Measured on the demo
# phantom (per-region RMSE against the truth, student / teacher; background, body,
# lung): 1x at uniform times 1.20 / 1.20 / 1.09; 1x at the sampler's time 1.05 / 1.22 /
# 1.09; 2x 0.94 / 1.11 / 1.03; 3x 0.91 / 1.08 / 1.01 (ipv2 demo --distill).
DISTILL_BUDGET = 3


def epochs_for(steps: int, manifest: Mapping[str, Any], batch_size: int) -> int:
    """Whole epochs that give at least ``steps`` training steps on the manifest's train
    split (the trainer drops the last partial batch of each epoch)."""
    slices = sum(
        int(case["shape_zyx"][0]) for case in manifest["cases"] if case.get("split") == "train"
    )
    per_epoch = slices // batch_size
    if per_epoch < 1:
        raise IPv2Error(
            f"the demo's training split has {slices} slices, fewer than one batch of "
            f"{batch_size}: nothing to distill on"
        )
    return max(1, math.ceil(steps / per_epoch))


def distill_student(
    config: DemoConfig,
    teacher: Path,
    dataset: Path,
    *,
    manifest: Mapping[str, Any],
    out: Path,
    reporter: Reporter,
) -> tuple[Path, dict[str, Any]]:
    """Train the one-step student of ``teacher`` on ``dataset``; its model and figures."""
    from ipv2.training.distill import DistillConfig, distill

    epochs = epochs_for(config.steps * DISTILL_BUDGET, manifest, config.batch_size)
    result = distill(
        DistillConfig(
            teacher=str(teacher),
            data=str(dataset),
            out=str(out),
            base=config.base,
            steps=STUDENT_STEPS,
            crop=config.crop,
            epochs=epochs,
            val_every=max(1, epochs // 20),  # the best-of-20 checkpoint, not every epoch
            batch_size=config.batch_size,
            lr=config.lr,
            seed=config.seed,
            device=config.device,
            threads=config.threads,
        ),
        reporter,
    )
    if result.get("status") != "ok":
        raise IPv2Error(
            f"the demo's distillation stopped ({result.get('reason')}); its run folder {out} "
            f"can be continued with {result.get('resume_command')}"
        )
    return Path(str(result["student"])), dict(result.get("distill") or {})


def student_checks(teacher: Mapping[str, Any], student: Mapping[str, Any]) -> list[Check]:
    """Each region's RMSE of the student against its teacher's; a missing figure fails."""
    checks = []
    for region in REGIONS:
        key = f"rmse_{region}_hu"
        ours, theirs = _number(student, key), _number(teacher, key)
        ratio = ours / theirs if ours is not None and theirs else None
        checks.append(
            Check(
                f"student's {region} RMSE within {STUDENT_VS_TEACHER - 1:.0%} of its teacher's",
                "?" if ratio is None else f"{ours:.1f} vs {theirs:.1f} HU ({ratio:.2f}x)",
                ratio is not None and ratio <= STUDENT_VS_TEACHER,
            )
        )
    return checks


def _number(row: Mapping[str, Any], key: str) -> float | None:
    value = row.get(key)
    return float(value) if isinstance(value, (int, float)) else None
