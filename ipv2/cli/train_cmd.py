"""``ipv2 train``: train a denoiser (or the weak denoiser) on a built dataset.

Single process: ``ipv2 train --data DS --output RUN``; several GPUs:
``torchrun --nproc_per_node 4 -m ipv2 train ...`` (same options). ``--resume --output RUN``
continues a stopped or killed run exactly; options given with it override only the
budget, epochs, device and threads.

Validation (the full sampler on whole slices: minutes per validation on a CPU) is sized
to the device unless --val-every and --val-limit are given: the first one, at the end
of the first epoch, times a slice and the training steps, then the slices (at most 32)
and the epochs between validations are chosen so that validating takes about 20% of wall
time; a log line says what was chosen. It shows a progress bar and stops at Ctrl+C or
SIGTERM like training does.

Periodic checkpoints (checkpoints/step-N, resumable) are written at the end of the first
epoch, then every --checkpoint-minutes (10) of wall time, and always at a stop and at the
end; --checkpoint-every N (epochs) replaces the clock, --checkpoint-every-steps adds to
it. The last --keep (3) are kept, plus best/ (lowest validation MAE) and final/. The run
ends by naming them and the command that continues it.

A finished run of a sampled scheme (flow, colddiff, corediff) first measures the steps
curve: validation RMSE (HU) and time per slice at 1, 2, 4 and the configured steps, on
the slices validation uses (about (7 + K) / K validations), stored in final/model.json;
ipv2 denoise --steps auto (its default) picks the fewest steps within max(2%, 1 HU) of
the best. Without validation (--val-every 0) nothing is measured.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ipv2.cli.common import add_device_option, add_events_option, add_threads_option
from ipv2.core.errors import InputError
from ipv2.core.events import JsonlReporter, Reporter


def register(sub: Any) -> None:
    p = sub.add_parser(
        "train",
        help="train FFM, FM, CoreDiff, Cold Diffusion or RED-CNN (the weak denoiser)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--data", help="dataset folder (ipv2 build-dataset, or the authors' PNG layout)")
    p.add_argument("--output", help="new run folder (checkpoints, events.jsonl, config.json)")
    p.add_argument("--list-models", action="store_true", help="list the networks and exit")
    p.add_argument("--resume", action="store_true", help="continue the run in --output")
    p.add_argument("--model", help="network name (see --list-models); default ffm")
    p.add_argument(
        "--scheme", help="flow, colddiff, corediff or regression (default: the network's)"
    )
    p.add_argument("--steps", type=int, help="sampling steps K (flow) or T (colddiff, corediff)")
    p.add_argument(
        "--model-param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="network hyper-parameter, e.g. base=32 or mults=[1,2,4] (repeatable)",
    )
    p.add_argument(
        "--scheme-param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="scheme parameter, e.g. loss=mse (repeatable)",
    )
    p.add_argument("--epochs", type=int, help="epochs (default 200)")
    p.add_argument("--batch-size", type=int, help="per process (default 2)")
    p.add_argument("--lr", type=float, help="Adam learning rate (default 1e-4)")
    p.add_argument(
        "--crop", type=int, help="random square crops of this size (default: whole slices)"
    )
    p.add_argument(
        "--flips", action="store_true", default=None, help="random horizontal and vertical flips"
    )
    p.add_argument("--ema", type=float, help="EMA decay; 0 disables (default 0.999)")
    p.add_argument("--grad-clip", type=float, help="max gradient norm; 0 disables (default 1)")
    p.add_argument("--no-amp", action="store_true", default=None, help="full precision on CUDA too")
    p.add_argument(
        "--val-every",
        type=int,
        help="epochs between validations; 0: never (default: sized to the device, see above)",
    )
    p.add_argument(
        "--val-limit",
        type=int,
        help="validation slices; 0: all (default: sized to the device, at most 32)",
    )
    p.add_argument(
        "--checkpoint-every",
        type=int,
        help="epochs between periodic checkpoints, instead of the clock (default: the clock)",
    )
    p.add_argument("--checkpoint-every-steps", type=int, help="also every N steps (default 0: off)")
    p.add_argument(
        "--checkpoint-minutes",
        type=float,
        help="the clock: minutes of wall time between periodic checkpoints (default 10)",
    )
    p.add_argument(
        "--keep", type=int, help="periodic checkpoints kept, besides best and final (default 3)"
    )
    p.add_argument("--log-every", type=int, help="steps between loss events (default 10)")
    p.add_argument("--max-steps", type=int, help="step budget (stop, resumable)")
    p.add_argument("--max-time", type=float, help="time budget in seconds for this run")
    p.add_argument(
        "--allow-long",
        action="store_true",
        help="allow --epochs > 10000, --max-steps > 1e8 or --steps > 1000 (refused otherwise)",
    )
    p.add_argument("--seed", type=int, help="random seed (default 0)")
    add_threads_option(p)
    p.add_argument(
        "--weak-denoiser",
        "--weak",
        dest="weak_denoiser",
        action="store_true",
        default=None,
        help="Module 3: train the weak denoiser on (sim(N), N) (one pass: the regression scheme)",
    )
    p.add_argument("--sim-dose", type=float, help="dose of on-the-fly sim(N) (default 0.02)")
    p.add_argument(
        "--train-kinds", nargs=2, metavar=("LOW", "HIGH"), help="dataset kinds to train on"
    )
    p.add_argument(
        "--val-kinds", nargs=2, metavar=("LOW", "LABEL"), help="dataset kinds to validate on"
    )
    add_device_option(p)
    add_events_option(p)
    p.set_defaults(run=run)


def _pairs(items: list[str], option: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise InputError(f"{option} takes KEY=VALUE, got {item!r}")
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            out[key] = raw
    return out


def _list_models(reporter: Reporter) -> int:
    from ipv2.models.bounds import parameter_count
    from ipv2.models.registry import MODELS, checked_hparams

    rows = []
    for name, spec in MODELS.items():
        # Counted on the meta device: no weights are made (about 150 MiB per base-64 UNet).
        params = parameter_count(spec.constructor, checked_hparams(name))
        rows.append(
            {
                "name": name,
                "scheme": spec.scheme,
                "params_m": round(params / 1e6, 2),
                "defaults": dict(spec.defaults),
                "summary": spec.summary,
            }
        )
    if isinstance(reporter, JsonlReporter):
        reporter.done(status="ok", models=rows)
        return 0
    print(f"{'name':<10} {'scheme':<11} {'params':>8}  summary")
    for r in rows:
        print(f"{r['name']:<10} {r['scheme']:<11} {r['params_m']:>7.2f}M  {r['summary']}")
        print(f"{'':<10} defaults: {json.dumps(r['defaults'])}")
    return 0


# Options that define what a run computes, by their argparse ``dest``: given with
# --resume they would silently not apply (the run continues with config.json's values),
# so they are refused. Budgets, device and threads may change (RESUME_OVERRIDABLE).
_DEFINING = {
    "data": "--data", "model": "--model", "scheme": "--scheme", "steps": "--steps",
    "model_param": "--model-param", "scheme_param": "--scheme-param",
    "batch_size": "--batch-size", "lr": "--lr", "crop": "--crop", "flips": "--flips",
    "ema": "--ema", "grad_clip": "--grad-clip", "no_amp": "--no-amp",
    "val_every": "--val-every", "val_limit": "--val-limit",
    "checkpoint_every": "--checkpoint-every",
    "checkpoint_every_steps": "--checkpoint-every-steps",
    "checkpoint_minutes": "--checkpoint-minutes", "keep": "--keep",
    "log_every": "--log-every", "seed": "--seed", "weak_denoiser": "--weak-denoiser",
    "sim_dose": "--sim-dose", "train_kinds": "--train-kinds", "val_kinds": "--val-kinds",
}  # fmt: skip

# argparse dest -> TrainConfig field, where the names differ.
_FIELD = {"ema": "ema_decay", "no_amp": "amp"}


def _given(args: argparse.Namespace, dest: str) -> bool:
    value = getattr(args, dest, None)
    return value not in (None, [])


def build_config(args: argparse.Namespace) -> Any:
    """A new run's config: what the command line gives, TrainConfig's defaults for the rest."""
    from ipv2.training.config import TrainConfig

    if not args.data or not args.output:
        raise InputError(
            "ipv2 train needs --data DATASET and --output RUN_FOLDER (or --list-models)"
        )
    scheme_params = _pairs(args.scheme_param, "--scheme-param")
    if args.steps is not None:
        scheme_params["steps"] = args.steps
    fields: dict[str, Any] = {
        # Absolute, so a --resume from another working directory finds the same dataset.
        "data": str(Path(args.data).resolve()),
        "output": args.output,
        "model_params": _pairs(args.model_param, "--model-param"),
        "scheme_params": scheme_params,
    }
    for dest in _DEFINING.keys() - {"data", "steps", "model_param", "scheme_param"}:
        if _given(args, dest):
            value = getattr(args, dest)
            fields[_FIELD.get(dest, dest)] = not value if dest == "no_amp" else value
    for dest in ("epochs", "max_steps", "max_time", "threads"):
        if getattr(args, dest) is not None:
            fields[dest] = getattr(args, dest)
    fields["device"] = args.device
    return TrainConfig(**fields)


def resume_config(args: argparse.Namespace) -> Any:
    from ipv2.training.config import TrainConfig

    if not args.output:
        raise InputError("--resume needs --output RUN_FOLDER (the folder of the run to continue)")
    given = [flag for dest, flag in _DEFINING.items() if _given(args, dest)]
    if given:
        raise InputError(
            f"--resume continues {args.output} with the settings it was started with; "
            f"{', '.join(given)} cannot change mid-run (only --epochs, --max-steps, "
            "--max-time, --device and --threads can): drop them, or start a new run"
        )
    cfg = TrainConfig.load(Path(args.output) / "config.json")
    # The run lives where the user points now: config.json's own "output" may be relative
    # to another working directory, or name the folder this one was copied from, and
    # resuming into that would overwrite its checkpoints.
    cfg.output = str(args.output)
    overrides = {
        "epochs": args.epochs,
        "max_steps": args.max_steps,
        "max_time": args.max_time,
        "threads": args.threads,
        "device": None if args.device == "auto" else args.device,
    }
    for key, value in overrides.items():
        if value is not None:
            setattr(cfg, key, value)
    return cfg


def run(args: argparse.Namespace, reporter: Reporter) -> int:
    if args.list_models:
        return _list_models(reporter)
    from ipv2.cli.train_bounds import check_training_bounds
    from ipv2.training.loop import train

    cfg = resume_config(args) if args.resume else build_config(args)
    check_training_bounds(cfg, allow_long=args.allow_long)
    result = train(cfg, reporter, resume=bool(args.resume))
    if result.get("status") == "stopped" and str(result.get("reason", "")).startswith("signal"):
        return 130
    return 0
