"""``ipv2 distill``: train a small one-step student that reproduces a slow teacher.

``ipv2 distill --teacher MODEL --data DS --out RUN`` samples the teacher (a sampled model:
FFM, FM, CoreDiff or Cold Diffusion, at its --steps auto choice) once on every training
input of the dataset (the input kind it was trained on), caching each slice in
RUN/teacher-targets, then trains an FFM of --base channels (16) sampled in --steps (1)
steps on (input, teacher output) crops with ipv2 train's loop, in RUN/student. At the
end it measures the teacher's and the student's RMSE (HU) against the validation labels
and their time per slice, records them with the teacher's name and weights' SHA-256 in
RUN/student/final/model.json (role student) and prints them. ipv2 denoise runs the
student like any model.

--max-steps and --max-time are budgets, as in ipv2 train: they stop the run resumably;
the student is final after --epochs. Ctrl+C or SIGTERM stops between teacher chunks or
training steps, keeping every finished slice and a checkpoint; --resume --out RUN
continues (finished teacher slices are reused, never recomputed), and may change only
--epochs, --max-steps, --max-time, --device and --threads.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ipv2.cli.common import add_device_option, add_events_option, add_threads_option
from ipv2.core.errors import InputError
from ipv2.core.events import Reporter


def register(sub: Any) -> None:
    p = sub.add_parser(
        "distill",
        help="distil a slow multi-step model into a small one-step student",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--teacher",
        help="the sampled model to distil: a model folder or the name of an installed model",
    )
    p.add_argument("--data", help="dataset folder (ipv2 build-dataset, or the authors' PNG layout)")
    p.add_argument("--out", help="new run folder (teacher targets, the student's training run)")
    p.add_argument("--resume", action="store_true", help="continue the distillation in --out")
    p.add_argument("--base", type=int, help="the student FFM's base channels (default 16)")
    p.add_argument("--steps", type=int, help="the student's sampling steps (default 1)")
    p.add_argument(
        "--times",
        choices=("sampler", "uniform"),
        help="train the student at its sampler's times only (default: sampler; for one "
        "step, t = 0) or at uniform times like its teacher (then --steps 2 stays usable)",
    )
    p.add_argument(
        "--crop", type=int, help="random square crops of this size (default: whole slices)"
    )
    p.add_argument("--epochs", type=int, help="epochs of student training (default 200)")
    p.add_argument("--batch-size", type=int, help="student batch size (default 2)")
    p.add_argument("--lr", type=float, help="Adam learning rate (default 1e-4)")
    p.add_argument("--max-steps", type=int, help="step budget (stop, resumable)")
    p.add_argument("--max-time", type=float, help="time budget in seconds for the training")
    p.add_argument(
        "--val-limit",
        type=int,
        help="validation slices, for training and the final comparison; 0: all "
        "(default: sized to the device in training, at most 32 for the comparison)",
    )
    p.add_argument(
        "--val-every",
        type=int,
        help="epochs between the student's validations (default: as ipv2 train; 0: none)",
    )
    p.add_argument("--seed", type=int, help="random seed (default 0)")
    p.add_argument(
        "--allow-long",
        action="store_true",
        help="allow --epochs > 10000, --max-steps > 1e8 or --steps > 1000 (refused otherwise)",
    )
    add_threads_option(p)
    add_device_option(p)
    add_events_option(p)
    p.set_defaults(run=run)


# Options that define what a distillation computes, by argparse dest: refused with
# --resume, where they would silently not apply (the run keeps its distill.json).
_DEFINING = {
    "teacher": "--teacher", "data": "--data", "base": "--base", "steps": "--steps",
    "times": "--times",
    "crop": "--crop", "batch_size": "--batch-size", "lr": "--lr",
    "val_limit": "--val-limit", "seed": "--seed",
}  # fmt: skip


def run(args: argparse.Namespace, reporter: Reporter) -> int:
    from ipv2.cli.train_bounds import check_training_bounds

    if args.resume:
        result = _resume(args, reporter, check_training_bounds)
    else:
        result = _start(args, reporter, check_training_bounds)
    if result.get("status") == "stopped" and str(result.get("reason", "")).startswith("signal"):
        return 130
    return 0


def _start(args: argparse.Namespace, reporter: Reporter, check_bounds: Any) -> dict[str, Any]:
    from ipv2.io.model_store import find_model
    from ipv2.training.distill import DistillConfig, distill

    if not args.teacher or not args.data or not args.out:
        raise InputError("ipv2 distill needs --teacher MODEL, --data DATASET and --out RUN_FOLDER")
    fields: dict[str, Any] = {
        "teacher": str(find_model(args.teacher)),
        "data": str(Path(args.data).resolve()),
        "out": args.out,
        "device": args.device,
    }
    for dest in (
        *_DEFINING.keys() - {"teacher", "data"},
        "epochs",
        "max_steps",
        "max_time",
        "val_every",
    ):
        if getattr(args, dest) is not None:
            fields[dest] = getattr(args, dest)
    if args.threads is not None:
        fields["threads"] = args.threads
    cfg = DistillConfig(**fields)
    cfg.validate()
    _check_bounds(cfg, check_bounds, allow_long=args.allow_long)
    return distill(cfg, reporter)


def _check_bounds(cfg: Any, check_bounds: Any, *, allow_long: bool) -> None:
    """ipv2 train's bounds on the student (its size, epochs and steps), before any work."""
    from ipv2.training.config import TrainConfig

    student = TrainConfig(
        data="",
        output="",
        model="ffm",
        model_params={"base": cfg.base},
        scheme_params={"steps": cfg.steps},
        epochs=cfg.epochs,
        max_steps=cfg.max_steps,
    )
    check_bounds(student, allow_long=allow_long)


def _resume(args: argparse.Namespace, reporter: Reporter, check_bounds: Any) -> dict[str, Any]:
    from ipv2.training.distill import resume_distill

    if not args.out:
        raise InputError("--resume needs --out RUN_FOLDER (the distillation to continue)")
    given = [flag for dest, flag in _DEFINING.items() if getattr(args, dest) is not None]
    if given:
        raise InputError(
            f"--resume continues {args.out} with the settings it was started with; "
            f"{', '.join(given)} cannot change mid-run (only --epochs, --max-steps, "
            "--max-time, --device and --threads can): drop them, or start a new run"
        )
    overrides = {
        "epochs": args.epochs,
        "max_steps": args.max_steps,
        "max_time": args.max_time,
        "threads": args.threads,
        "device": None if args.device == "auto" else args.device,
    }
    if args.epochs is not None or args.max_steps is not None:
        _check_counts(args, check_bounds)
    return resume_distill(args.out, reporter, **overrides)


def _check_counts(args: argparse.Namespace, check_bounds: Any) -> None:
    from ipv2.training.config import TrainConfig

    student = TrainConfig(
        data="", output="", epochs=args.epochs or 1, max_steps=args.max_steps or 0
    )
    check_bounds(student, allow_long=args.allow_long)
