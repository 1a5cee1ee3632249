"""``ipv2 train``: train a denoiser (or the weak denoiser) on a built dataset.

Single process: ``ipv2 train --data DS --output RUN``; several GPUs:
``torchrun --nproc_per_node 4 -m ipv2 train ...`` (same options). ``--resume --output RUN``
continues a stopped or killed run exactly; options given with it override only the
budget, epochs, device and threads.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ipv2.cli.common import add_device_option, add_events_option
from ipv2.core.errors import InputError
from ipv2.core.events import JsonlReporter, Reporter

_DEFAULTS: dict[str, Any] = {}


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
    p.add_argument("--model", default="ffm", help="network name (see --list-models); default ffm")
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
    p.add_argument("--batch-size", type=int, default=2, help="per process (default 2)")
    p.add_argument("--lr", type=float, default=1e-4, help="Adam learning rate (default 1e-4)")
    p.add_argument(
        "--crop", type=int, help="random square crops of this size (default: whole slices)"
    )
    p.add_argument("--flips", action="store_true", help="random horizontal and vertical flips")
    p.add_argument("--ema", type=float, default=0.999, help="EMA decay; 0 disables (default 0.999)")
    p.add_argument("--grad-clip", type=float, default=1.0, help="max gradient norm; 0 disables")
    p.add_argument("--no-amp", action="store_true", help="full precision on CUDA too")
    p.add_argument("--val-every", type=int, default=1, help="epochs between validations; 0: never")
    p.add_argument("--val-limit", type=int, default=32, help="validation slices; 0: all")
    p.add_argument("--checkpoint-every", type=int, default=1, help="epochs between checkpoints")
    p.add_argument("--checkpoint-every-steps", type=int, default=0, help="also every N steps")
    p.add_argument("--keep", type=int, default=3, help="periodic checkpoints kept (default 3)")
    p.add_argument("--log-every", type=int, default=10, help="steps between loss events")
    p.add_argument("--max-steps", type=int, help="step budget (stop, resumable)")
    p.add_argument("--max-time", type=float, help="time budget in seconds for this run")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument(
        "--weak-denoiser",
        "--weak",
        dest="weak_denoiser",
        action="store_true",
        help="Module 3: train the weak denoiser on (sim(N), N) with --scheme regression",
    )
    p.add_argument("--sim-dose", type=float, default=0.02, help="dose of on-the-fly sim(N)")
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
    from ipv2.models.registry import MODELS, build

    rows = []
    for name, spec in MODELS.items():
        params = sum(p.numel() for p in build(name).parameters())
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


def build_config(args: argparse.Namespace) -> Any:
    from ipv2.training.config import TrainConfig

    if not args.data or not args.output:
        raise InputError(
            "ipv2 train needs --data DATASET and --output RUN_FOLDER (or --list-models)"
        )
    scheme_params = _pairs(args.scheme_param, "--scheme-param")
    if args.steps is not None:
        scheme_params["steps"] = args.steps
    return TrainConfig(
        # Absolute, so a --resume from another working directory finds the same dataset.
        data=str(Path(args.data).resolve()),
        output=args.output,
        model=args.model,
        scheme=args.scheme,
        model_params=_pairs(args.model_param, "--model-param"),
        scheme_params=scheme_params,
        epochs=args.epochs if args.epochs is not None else 200,
        batch_size=args.batch_size,
        lr=args.lr,
        crop=args.crop,
        flips=args.flips,
        ema_decay=args.ema,
        grad_clip=args.grad_clip,
        amp=not args.no_amp,
        val_every=args.val_every,
        val_limit=args.val_limit,
        checkpoint_every=args.checkpoint_every,
        checkpoint_every_steps=args.checkpoint_every_steps,
        keep=args.keep,
        log_every=args.log_every,
        max_steps=args.max_steps or 0,
        max_time=args.max_time or 0.0,
        seed=args.seed,
        device=args.device,
        threads=args.threads or 0,
        weak_denoiser=args.weak_denoiser,
        sim_dose=args.sim_dose,
        train_kinds=list(args.train_kinds or []),
        val_kinds=list(args.val_kinds or []),
    )


def resume_config(args: argparse.Namespace) -> Any:
    from ipv2.training.config import TrainConfig

    if not args.output:
        raise InputError("--resume needs --output RUN_FOLDER (the folder of the run to continue)")
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
    from ipv2.training.loop import train

    cfg = resume_config(args) if args.resume else build_config(args)
    result = train(cfg, reporter, resume=bool(args.resume))
    if result.get("status") == "stopped" and str(result.get("reason", "")).startswith("signal"):
        return 130
    return 0
