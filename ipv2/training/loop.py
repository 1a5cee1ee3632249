"""The training loop: one code path for CPU, one GPU and torchrun/DDP.

Reproducibility is structural rather than stateful: the epoch's sample order comes from
``DistributedSampler`` (seeded by seed + epoch, also used with a world of one), each
sample's augmentation from (seed, epoch, index), and the torch RNG is reseeded from
(seed, step, rank) before every step. A resume therefore needs only the weights, the
optimizer, the EMA and the counters, and reproduces an uninterrupted run exactly on CPU.

Only rank 0 validates, writes checkpoints and emits events; all ranks agree on stopping
(signals, budgets) through one tiny all-reduce per step.
"""

from __future__ import annotations

import json
import os
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import Dataset
from torch.utils.data.distributed import DistributedSampler

from ipv2.core.errors import InputError
from ipv2.core.events import Reporter
from ipv2.data.training_pairs import (
    LowTransform,
    SlicePairs,
    available_kinds,
    make_batch,
    pick_kind,
    read_dataset_info,
)
from ipv2.io.atomic import check_new_output_dir, write_json_atomic
from ipv2.io.checkpoints import load_train_state, model_metadata, recover, write_checkpoint
from ipv2.models.common import Network
from ipv2.models.registry import build, get_spec
from ipv2.runtime.runs import CHECKPOINTS, PROCESS, latest_checkpoint
from ipv2.runtime.stop_requests import StopRequest
from ipv2.schemes.registry import make_scheme
from ipv2.training.config import TrainConfig
from ipv2.training.dist import DistContext
from ipv2.training.ema import EMA
from ipv2.training.simulated_pairs import dataset_pixel_mm, make_simulator
from ipv2.training.state import capture, restore
from ipv2.training.tee import TeeReporter
from ipv2.training.validate import validate


@dataclass
class Counters:
    """Where the run is: the next batch to train is ``order[batch]`` of ``epoch``."""

    step: int = 0
    epoch: int = 0
    batch: int = 0
    best_mae: float = float("inf")
    elapsed: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "epoch": self.epoch,
            "batch": self.batch,
            "best_mae": None if not np.isfinite(self.best_mae) else self.best_mae,
            "elapsed": self.elapsed,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Counters:
        best = data.get("best_mae")
        return cls(
            int(data["step"]),
            int(data["epoch"]),
            batch=int(data["batch"]),
            best_mae=float("inf") if best is None else float(best),
            elapsed=float(data.get("elapsed", 0.0)),
        )


def step_seed(seed: int, step: int, rank: int) -> int:
    """The torch seed of one step on one rank (dropout, scheme times)."""
    return int(np.random.SeedSequence([seed, step, rank]).generate_state(1, np.uint64)[0] >> 1)


class Trainer:
    """One training run; construct, then :meth:`run`."""

    def __init__(self, cfg: TrainConfig, reporter: Reporter, resume: bool) -> None:
        cfg.validate()
        self.cfg = cfg
        self.resume = resume
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.ctx = DistContext.from_env(cfg.device)
        self.output = Path(cfg.output)
        if resume and not (self.output / "config.json").is_file():
            raise InputError(f"cannot resume: {self.output} is not a training output folder")
        if not resume and self.ctx.main:
            check_new_output_dir(self.output)
        self.info = read_dataset_info(cfg.data)
        self.window = self.info.window
        spec = get_spec(cfg.model)
        scheme_name = cfg.scheme or ("regression" if cfg.weak_denoiser else spec.scheme)
        if cfg.weak_denoiser and scheme_name != "regression":
            raise InputError(
                f"--weak-denoiser trains a one-pass network; use --scheme regression, not {scheme_name!r}"
            )
        self.scheme = make_scheme(scheme_name, **cfg.scheme_params)
        torch.manual_seed(cfg.seed)
        self.model: Network = build(cfg.model, **cfg.model_params).to(self.ctx.device)
        self.context = int(self.model.hparams.get("context", 0))  # type: ignore[call-overload]
        self._open_data()
        self.ema = EMA(self.model, cfg.ema_decay) if cfg.ema_decay > 0 else None
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=cfg.lr)
        self.amp_dtype = self._amp_dtype()
        self.scaler = torch.amp.GradScaler("cuda") if self.amp_dtype == torch.float16 else None
        self.counters = Counters()
        self.last_metrics: dict[str, float] = {}
        self.sampler: DistributedSampler[int] = DistributedSampler(
            cast("Dataset[int]", range(len(self.train))),
            num_replicas=self.ctx.world,
            rank=self.ctx.rank,
            shuffle=True,
            seed=cfg.seed,
            drop_last=True,
        )
        self.per_epoch = len(self.sampler) // cfg.batch_size
        if self.per_epoch == 0:
            raise InputError(
                f"the training split has {len(self.train)} slices, fewer than batch size "
                f"{cfg.batch_size} x {self.ctx.world} process(es); lower --batch-size"
            )
        # Everything is checked; only now does the output folder appear.
        self._prepare_output()
        self.events: Reporter = (
            TeeReporter(reporter, self.output / "events.jsonl") if self.ctx.main else Reporter()
        )

    # ------------------------------------------------------------------ setup

    def _prepare_output(self) -> None:
        if self.ctx.main:
            if self.resume:
                if not (self.output / "config.json").is_file():
                    raise InputError(
                        f"cannot resume: {self.output} is not a training output folder"
                    )
                recover(self.output / CHECKPOINTS)
                recover(self.output)
            else:
                check_new_output_dir(self.output)
                self.output.mkdir(exist_ok=True)
                write_json_atomic(self.output / "config.json", self.cfg.to_json())
            # Who is training right now, so a panel can re-attach (and stop it) later.
            write_json_atomic(
                self.output / PROCESS,
                {
                    "pid": os.getpid(),
                    "argv": sys.argv,
                    "started": time.time(),
                    "resume": self.resume,
                },
            )
        self.ctx.barrier()

    def _open_data(self) -> None:
        cfg, info = self.cfg, self.info
        self.sim: LowTransform | None = None
        if cfg.train_kinds:
            low, high = cfg.train_kinds
        elif cfg.weak_denoiser:
            high = pick_kind(info, "train", ["ndct"])
            if "sim" in available_kinds(info, "train"):
                low = "sim"
            else:
                low = high
                self.sim = make_simulator(cfg.sim_dose, dataset_pixel_mm(info))
        else:
            low = pick_kind(info, "train", ["input", "uldct"])
            high = pick_kind(info, "train", ["ndct"])
        self.train_kinds = [low, high]
        self.train = SlicePairs(info, "train", low, high, context=self.context)
        self.val: SlicePairs | None = None
        self.val_sim: LowTransform | None = None
        if cfg.val_every and available_kinds(info, "val"):
            if cfg.val_kinds:
                vlow, vlabel = cfg.val_kinds
            elif cfg.weak_denoiser:
                vlabel = pick_kind(info, "val", ["ndct"])
                vlow = "sim" if "sim" in available_kinds(info, "val") else vlabel
                self.val_sim = (
                    None
                    if vlow == "sim"
                    else (self.sim or make_simulator(cfg.sim_dose, dataset_pixel_mm(info)))
                )
            else:
                vlow = pick_kind(info, "val", ["uldct", "input"])
                vlabel = pick_kind(info, "val", ["label", "ndct"])
            self.val = SlicePairs(info, "val", vlow, vlabel, context=self.context)
            self.val_kinds = [vlow, vlabel]
        size = cfg.crop if cfg.crop is not None else None
        h, w = self.train.shape
        stride = self.model.stride
        if size is not None and size % stride:
            raise InputError(
                f"--crop {size} must be a multiple of {stride} for the {cfg.model!r} network"
            )
        if size is None and (h % stride or w % stride):
            raise InputError(
                f"training slices are {h} x {w}, not multiples of {stride} (the {cfg.model!r} "
                f"network's stride); pass --crop with a multiple of {stride}"
            )

    def _amp_dtype(self) -> torch.dtype | None:
        if not (self.cfg.amp and self.ctx.device.type == "cuda"):
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16

    # ------------------------------------------------------------------ checkpoints

    def _meta(self) -> dict[str, Any]:
        cfg = self.cfg
        return model_metadata(
            self.model,
            self.scheme,
            self.window,
            strategy=self.info.strategy,
            modules=self.info.modules,
            data_fingerprint=self.info.fingerprint,
            epoch=self.counters.epoch,
            step=self.counters.step,
            metrics=self.last_metrics,
            extra={
                "role": "weak-denoiser" if cfg.weak_denoiser else "denoiser",
                "weights_kind": "ema" if self.ema is not None else "raw",
                "train_kinds": self.train_kinds,
                "data_root": str(Path(cfg.data).resolve()),
                "config": cfg.to_json(),
            },
        )

    def _export_weights(self) -> dict[str, torch.Tensor]:
        source = self.ema.model if self.ema is not None else self.model
        return dict(source.state_dict())

    def _save_periodic(self) -> Path | None:
        if not self.ctx.main:
            return None
        c = self.counters
        target = self.output / CHECKPOINTS / f"step-{c.step:09d}"
        state = capture(
            self.model, self.optimizer, self.ema, scaler=self.scaler, counters=c.to_json()
        )
        write_checkpoint(target, self._export_weights(), self._meta(), state=state)
        old = sorted((self.output / CHECKPOINTS).glob("step-*"))[: -self.cfg.keep]
        for folder in old:
            for f in folder.iterdir():
                f.unlink()
            folder.rmdir()
        self.events.emit(
            "checkpoint", path=str(target), role="periodic", step=c.step, epoch=c.epoch
        )
        return target

    def _save_named(self, name: str) -> Path:
        target = write_checkpoint(self.output / name, self._export_weights(), self._meta())
        self.events.emit(
            "checkpoint",
            path=str(target),
            role=name,
            step=self.counters.step,
            epoch=self.counters.epoch,
        )
        return target

    def _resume_state(self) -> None:
        latest = latest_checkpoint(self.output)
        if latest is None:
            self.events.log("no checkpoint to resume from yet; starting from the beginning")
            return
        state = load_train_state(latest)
        scalars = restore(state, self.model, self.optimizer, ema=self.ema, scaler=self.scaler)
        self.counters = Counters.from_json(scalars)
        self.events.log(
            f"resumed from {latest} (step {self.counters.step}, epoch {self.counters.epoch})"
        )

    # ------------------------------------------------------------------ loop

    def run(self) -> dict[str, Any]:
        try:
            return self._run()
        except BaseException as exc:
            # The command line reports the error on stdout; the run's own log needs it
            # too, or a panel re-attaching later would only see the run stop talking.
            if isinstance(self.events, TeeReporter):
                self.events.file_only("error", message=str(exc) or type(exc).__name__)
            raise
        finally:
            self._mark_ended()
            self.events.close()
            self.ctx.close()

    def _mark_ended(self) -> None:
        """Record in ``process.json`` that this process no longer trains (pids get reused)."""
        record = self.output / PROCESS
        if self.ctx.main and record.is_file():
            data = json.loads(record.read_text(encoding="utf-8"))
            data["ended"] = time.time()
            write_json_atomic(record, data)

    def _run(self) -> dict[str, Any]:
        cfg, c = self.cfg, self.counters
        if self.resume:
            self._resume_state()
            c = self.counters
        net: nn.Module = self.model
        if self.ctx.world > 1:
            ids = [self.ctx.device.index] if self.ctx.device.type == "cuda" else None
            net = DistributedDataParallel(self.model, device_ids=ids)
        sampler, per_epoch = self.sampler, self.per_epoch
        total = cfg.epochs * per_epoch
        if cfg.max_steps:
            total = min(total, cfg.max_steps)
        self.events.log(
            f"training {cfg.model} with {self.scheme.name} on {self.ctx.device} "
            f"(world {self.ctx.world}): {len(self.train)} slices, {per_epoch} steps per epoch"
        )
        start = time.monotonic()
        elapsed0 = c.elapsed
        window_start, window_steps = time.monotonic(), 0
        order: list[int] | None = None
        reason: str | None = None
        with StopRequest() as stop:
            while c.epoch < cfg.epochs and not (cfg.max_steps and c.step >= cfg.max_steps):
                if order is None:
                    sampler.set_epoch(c.epoch)
                    order = list(sampler)
                idx = order[c.batch * cfg.batch_size : (c.batch + 1) * cfg.batch_size]
                loss = self._step(net, idx, c)
                c.step += 1
                c.batch += 1
                window_steps += 1
                c.elapsed = elapsed0 + time.monotonic() - start
                save = False
                if c.step % cfg.log_every == 0 or c.batch == per_epoch:
                    value = float(loss.item())
                    if not np.isfinite(value):
                        raise InputError(
                            f"the loss became {value} at step {c.step}; lower --lr or disable AMP"
                        )
                    rate = (
                        window_steps
                        * cfg.batch_size
                        * self.ctx.world
                        / max(time.monotonic() - window_start, 1e-9)
                    )
                    window_start, window_steps = time.monotonic(), 0
                    self.events.metric(
                        "loss", value, step=c.step, epoch=c.epoch, images_per_s=round(rate, 2)
                    )
                    self.events.progress("train", min(c.step, total), total, epoch=c.epoch)
                if c.batch == per_epoch:
                    c.epoch += 1
                    c.batch = 0
                    order = None
                    if self.val is not None and cfg.val_every and c.epoch % cfg.val_every == 0:
                        self._validate()
                    save = c.epoch % cfg.checkpoint_every == 0 or c.epoch == cfg.epochs
                if cfg.checkpoint_every_steps and c.step % cfg.checkpoint_every_steps == 0:
                    save = True
                reason = self._stop_reason(stop, c)
                if save or reason:
                    self._save_periodic()
                if reason:
                    break
        if reason is None and cfg.max_steps and c.step >= cfg.max_steps and c.epoch < cfg.epochs:
            reason = "step budget"
        result: dict[str, Any] = {"step": c.step, "epoch": c.epoch, "metrics": self.last_metrics}
        if reason is not None:
            result.update(status="stopped", reason=reason, resume=str(self.output))
        else:
            final = self._save_named("final") if self.ctx.main else self.output / "final"
            result.update(status="ok", checkpoint=str(final))
        best = self.output / "best"
        if best.is_dir():
            result["best"] = str(best)
        self.events.done(**result)
        return result

    def _stop_reason(self, stop: StopRequest, c: Counters) -> str | None:
        reason = None
        if stop.requested:
            reason = f"signal {stop.signal_name}"
        elif self.cfg.max_time and c.elapsed >= self.cfg.max_time:
            reason = "time budget"
        elif self.cfg.max_steps and c.step >= self.cfg.max_steps and c.epoch < self.cfg.epochs:
            reason = "step budget"
        if self.ctx.any_true(reason is not None) and reason is None:
            reason = "stopped by another process"
        return reason

    def _step(self, net: nn.Module, idx: list[int], c: Counters) -> torch.Tensor:
        cfg = self.cfg
        low_np, high_np, cond_np = make_batch(
            self.train,
            idx,
            self.window,
            seed=cfg.seed,
            epoch=c.epoch,
            crop=cfg.crop,
            flips=cfg.flips,
            low_transform=self.sim,
        )
        dev = self.ctx.device
        low = torch.from_numpy(low_np).to(dev, non_blocking=True)
        high = torch.from_numpy(high_np).to(dev, non_blocking=True)
        cond = torch.from_numpy(cond_np).to(dev) if self.model.cond_channels else None
        torch.manual_seed(step_seed(cfg.seed, c.step, self.ctx.rank))
        net.train()
        autocast = (
            torch.autocast(dev.type, dtype=self.amp_dtype)
            if self.amp_dtype is not None
            else nullcontext()
        )
        with autocast:
            loss = self.scheme.loss(net, low, high, cond=cond)
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
        else:
            loss.backward()
        if cfg.grad_clip > 0:
            nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        if self.ema is not None:
            self.ema.update(self.model)
        return loss.detach()

    def _validate(self) -> None:
        if self.ctx.main and self.val is not None:
            model = cast(Network, self.ema.model) if self.ema is not None else self.model
            metrics = validate(
                model,
                self.scheme,
                self.val,
                window=self.window,
                device=self.ctx.device,
                limit=self.cfg.val_limit,
                autocast_dtype=self.amp_dtype,
                seed=self.cfg.seed,
                low_transform=self.val_sim,
            )
            self.last_metrics = metrics
            c = self.counters
            for name, value in metrics.items():
                self.events.metric(f"val_{name}", value, step=c.step, epoch=c.epoch)
            if metrics["mae_hu"] < c.best_mae:
                c.best_mae = metrics["mae_hu"]
                self._save_named("best")
        self.ctx.barrier()


def train(
    cfg: TrainConfig, reporter: Reporter | None = None, resume: bool = False
) -> dict[str, Any]:
    """Train per ``cfg``; returns the ``done`` event's fields (status, step, checkpoint...)."""
    return Trainer(cfg, reporter or Reporter(), resume).run()
