"""The training loop: one code path for CPU, one GPU and torchrun/DDP.

Reproducibility is structural rather than stateful: the epoch's sample order comes from
``DistributedSampler`` (seeded by seed + epoch, also used with a world of one), each
sample's augmentation from (seed, epoch, index), and the torch RNG is reseeded from
(seed, step, rank) before every step. A resume therefore needs only the weights, the
optimizer, the EMA and the counters, and reproduces an uninterrupted run exactly on CPU.

Only rank 0 validates, writes checkpoints and emits events; all ranks agree on stopping
(signals, budgets) through one tiny all-reduce per step, and on when to validate (a
choice rank 0 makes from its own timings) through one per epoch.

What the user leaves unset is sized to the device (:mod:`ipv2.training.budget`): the
validation's slices and interval from measured step and slice times, checkpoints by the
clock. Validation reports each slice and stops at a stop request like training does, and
the run ends with the folders it leaves and the command that continues it
(:mod:`ipv2.training.summary`). A finished run of a sampled scheme first measures its
steps curve (:mod:`ipv2.training.steps_curve`) into the final model's ``model.json``.
"""

from __future__ import annotations

import contextlib
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

from ipv2.core.errors import InputError, OutputExistsError
from ipv2.core.events import Reporter
from ipv2.core.json_files import read_json_object
from ipv2.core.thread_pool import default_worker_count
from ipv2.data.training_pairs import (
    LowTransform,
    SlicePairs,
    available_kinds,
    make_batch,
    pick_kind,
    read_dataset_info,
)
from ipv2.inference.model_card import training_card
from ipv2.inference.steps_auto import read_curve
from ipv2.io.atomic import check_new_output_dir, write_json_atomic
from ipv2.io.checkpoints import load_train_state, model_metadata, recover, write_checkpoint
from ipv2.models.common import Network
from ipv2.models.registry import build, get_spec
from ipv2.runtime.run_lock import LOCK_NAME, RunLock
from ipv2.runtime.runs import CHECKPOINTS, PROCESS, periodic_checkpoints
from ipv2.runtime.stop_requests import StopRequest, stop_file
from ipv2.schemes.registry import make_scheme
from ipv2.training.budget import MAX_SLICES, CheckpointCadence, ValidationPlan, plan_validation
from ipv2.training.config import TrainConfig
from ipv2.training.dist import DistContext
from ipv2.training.ema import EMA
from ipv2.training.simulated_pairs import dataset_pixel_mm, make_simulator
from ipv2.training.state import capture, restore
from ipv2.training.steps_curve import curve_record, has_steps, measure_steps_curve
from ipv2.training.summary import RunEnd
from ipv2.training.tee import TeeReporter
from ipv2.training.validate import (
    ValidationStopped,
    Validator,
    mean_metrics,
    validation_indices,
)


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


def apply_torch_threads(requested: int) -> int:
    """Set torch's CPU threads: ``requested``, or this process's share of the cores.

    torch's own default counts the machine's cores, not the ones this process may use
    (affinity, cgroup quota), and torchrun starts one process per rank on the same cores;
    either way more threads than cores spend as much time in the kernel as computing.
    The inter-op pool (idle in eager training, but started on first use) is capped too;
    torch allows that only before its first parallel work, so a second run in the same
    process keeps what the first set.
    """
    local_world = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    count = requested or max(1, default_worker_count() // local_world)
    torch.set_num_threads(count)
    if torch.get_num_interop_threads() > count:
        with contextlib.suppress(RuntimeError):
            torch.set_num_interop_threads(count)
    return count


def step_seed(seed: int, step: int, rank: int) -> int:
    """The torch seed of one step on one rank (dropout, scheme times)."""
    return int(np.random.SeedSequence([seed, step, rank]).generate_state(1, np.uint64)[0] >> 1)


class Trainer:
    """One training run; construct, then :meth:`run`."""

    def __init__(self, cfg: TrainConfig, reporter: Reporter, resume: bool) -> None:
        cfg.validate()
        self.cfg = cfg
        self.resume = resume
        self.threads = apply_torch_threads(cfg.threads)
        self.ctx = DistContext.from_env(cfg.device)
        self.output = Path(cfg.output)
        # One writer per run folder, held until run() ends: a resume of a live run is
        # refused here, before anything is loaded; a new run takes it with its folder.
        self.lock = RunLock(self.output, action="resume" if resume else "train")
        if resume and not (self.output / "config.json").is_file():
            raise InputError(f"cannot resume: {self.output} is not a training output folder")
        if self.ctx.main:
            if resume:
                self.lock.acquire()
            else:
                self._check_new_folder()
        try:
            self._setup(reporter)
        except BaseException:
            self.lock.release()
            raise

    # ------------------------------------------------------------------ setup

    def _setup(self, reporter: Reporter) -> None:
        cfg = self.cfg
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
        self.steps_curve: dict[str, Any] = {}  # measured at the end; only final/ carries it
        self.cadence = CheckpointCadence(
            every_epochs=cfg.checkpoint_every,
            every_steps=cfg.checkpoint_every_steps,
            minutes=cfg.checkpoint_minutes,
        )
        self.val_plan: ValidationPlan | None = None  # sized at the first validation
        self.last_val_epoch = 0
        self.clock = _Clock()
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
                self._claim_new_folder()
                write_json_atomic(self.output / "config.json", self.cfg.to_json())
            # Who is training right now, so a panel can re-attach (and stop it) later.
            write_json_atomic(
                self.output / PROCESS,
                {
                    "pid": os.getpid(),
                    "argv": sys.argv,
                    "started": time.time(),
                    "resume": self.resume,
                    # A panel that re-attaches stops the run through this file: signals
                    # may not reach it (a launcher in between; Windows without a console).
                    "stop_file": str(stop_file()) if stop_file() is not None else None,
                },
            )
        self.ctx.barrier()

    def _check_new_folder(self) -> None:
        """A new run needs an absent or empty folder; a lone lock file is another
        trainer's claim (refused while it lives) or a dead one's leftover (ignored)."""
        if self.output.is_dir() and [p.name for p in self.output.iterdir()] == [LOCK_NAME]:
            with RunLock(self.output, action="train"):
                return
        check_new_output_dir(self.output)

    def _claim_new_folder(self) -> None:
        """Create and lock the run folder, then check it is still ours alone.

        Another trainer may have started on the same folder since ``__init__`` checked
        it: the lock decides who writes, and the winner's files make the folder non-empty
        for everyone after.
        """
        self._check_new_folder()
        self.output.mkdir(exist_ok=True)
        lock_existed = (self.output / LOCK_NAME).exists()
        self.lock.acquire()
        others = [p.name for p in self.output.iterdir() if p.name != LOCK_NAME]
        if others:
            self.lock.release()
            if not lock_existed:
                with contextlib.suppress(OSError):
                    (self.output / LOCK_NAME).unlink()
            raise OutputExistsError(
                f"output {self.output} was filled by another process while this run started "
                f"({', '.join(sorted(others)[:3])}); choose a new folder"
            )

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
        if cfg.val_every != 0 and available_kinds(info, "val"):
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
            self.validator = Validator(
                self.val,
                window=self.window,
                device=self.ctx.device,
                autocast_dtype=self._amp_dtype(),
                seed=cfg.seed,
                low_transform=self.val_sim,
            )
        size = cfg.crop if cfg.crop is not None else None
        h, w = self.train.shape
        if size is not None and size > min(h, w):
            raise InputError(
                f"--crop {size} is larger than the training slices ({h} x {w}); "
                f"use a crop of at most {min(h, w)} or leave it out for whole slices"
            )
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
                "card": training_card(cfg.data, self.info.manifest, train_kinds=self.train_kinds),
                **self.steps_curve,
            },
        )

    def _export_weights(self) -> dict[str, torch.Tensor]:
        source = self.ema.model if self.ema is not None else self.model
        return dict(source.state_dict())

    def _save_periodic(self) -> Path | None:
        if not self.ctx.main:
            return None
        began = time.monotonic()
        try:
            return self._write_periodic()
        finally:
            self.clock.last_save = time.monotonic()
            self.clock.saved = True
            self.clock.paused += self.clock.last_save - began

    def _write_periodic(self) -> Path:
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
        """Continue from the newest checkpoint that verifies, saying which and why.

        A checkpoint damaged after it was written (disk error, a user's copy cut short)
        is skipped with a warning naming it, never silently: the user learns that the
        run went back to an older step.
        """
        found = periodic_checkpoints(self.output)
        if not found:
            self.events.log("no checkpoint to resume from yet; starting from the beginning")
            return
        skipped: list[str] = []
        for folder in reversed(found):
            try:
                state = load_train_state(folder)
            except InputError as exc:
                skipped.append(f"{folder.name} ({exc})")
                self.events.log(f"not resuming from {folder}: {exc}", level="warning")
                continue
            scalars = restore(state, self.model, self.optimizer, ema=self.ema, scaler=self.scaler)
            self.counters = Counters.from_json(scalars)
            note = f"; skipped newer damaged {', '.join(skipped)}" if skipped else ""
            self.events.log(
                f"resumed from {folder} (step {self.counters.step}, "
                f"epoch {self.counters.epoch}){note}"
            )
            return
        raise InputError(
            f"cannot resume {self.output}: every checkpoint is damaged ({'; '.join(skipped)}); "
            "start a new run, or restore the run folder from a backup"
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
            self.lock.release()

    def _mark_ended(self) -> None:
        """Record in ``process.json`` that this process no longer trains (pids get reused)."""
        record = self.output / PROCESS
        if self.ctx.main and record.is_file():
            try:
                data = read_json_object(record, what="the training process record")
            except InputError:
                data = {}  # damaged while we ran; rewrite it whole
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
            f"(world {self.ctx.world}, threads {self.threads}): {len(self.train)} slices, "
            f"{per_epoch} steps per epoch"
        )
        self.events.log(self.cadence.describe(cfg.keep))
        self.clock = _Clock()
        start = time.monotonic()
        elapsed0 = c.elapsed
        window_start, window_steps = time.monotonic(), 0
        order: list[int] | None = None
        reason: str | None = None
        # Epochs and steps in events are 1-based counts: the loss of a step in the first
        # epoch and the validation after it both say epoch 1.
        self.events.progress("train", min(c.step, total), total, epoch=c.epoch + 1)
        with StopRequest() as stop:
            while c.epoch < cfg.epochs and not (cfg.max_steps and c.step >= cfg.max_steps):
                if order is None:
                    sampler.set_epoch(c.epoch)
                    order = list(sampler)
                idx = order[c.batch * cfg.batch_size : (c.batch + 1) * cfg.batch_size]
                began = time.monotonic()
                loss = self._step(net, idx, c)
                self.clock.count_step(time.monotonic() - began)
                c.step += 1
                c.batch += 1
                window_steps += 1
                c.elapsed = elapsed0 + time.monotonic() - start
                paused = self.clock.paused
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
                    self.events.progress("train", min(c.step, total), total, epoch=c.epoch + 1)
                    self.events.metric(
                        "loss", value, step=c.step, epoch=c.epoch + 1, images_per_s=round(rate, 2)
                    )
                epoch_ended: int | None = None
                if c.batch == per_epoch:
                    c.epoch += 1
                    c.batch = 0
                    order = None
                    epoch_ended = c.epoch
                    if self._validation_due(c.epoch):
                        self._validate(stop)
                save = epoch_ended == cfg.epochs or self.cadence.due(
                    step=c.step,
                    epoch_ended=epoch_ended,
                    since_last_s=time.monotonic() - self.clock.last_save,
                    saved_yet=self.clock.saved,
                )
                reason = self._stop_reason(stop, c)
                if save or reason:
                    self._save_periodic()
                # The rate counts training only, not validations and checkpoints.
                window_start += self.clock.paused - paused
                if reason:
                    break
        if reason is None and cfg.max_steps and c.step >= cfg.max_steps and c.epoch < cfg.epochs:
            reason = "step budget"
        result: dict[str, Any] = {"step": c.step, "epoch": c.epoch, "metrics": self.last_metrics}
        final: Path | None = None
        if reason is not None:
            result.update(status="stopped", reason=reason, resume=str(self.output))
        else:
            if self.ctx.main:
                self._measure_steps_curve()
                final = self._save_named("final")
            else:
                final = self.output / "final"
            result.update(status="ok", checkpoint=str(final))
            if self.steps_curve:
                result.update(
                    steps_curve=self.steps_curve["steps_curve"],
                    steps_auto=self.steps_curve["steps_auto"],
                )
        found = periodic_checkpoints(self.output)
        end = RunEnd(
            output=self.output,
            reason=reason,
            step=c.step,
            epoch=c.epoch,
            epochs=cfg.epochs,
            seconds=time.monotonic() - start,
            best=self.output / "best" if (self.output / "best").is_dir() else None,
            best_mae=c.best_mae,
            last=found[-1] if found else None,
            final=final,
        )
        result.update(end.fields())
        for line in end.lines():
            self.events.log(line)
        self.events.done(**result)
        return result

    def _stop_reason(self, stop: StopRequest, c: Counters) -> str | None:
        reason = None
        if stop.requested:
            reason = stop.reason  # 'signal SIGTERM' or 'stop request'
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

    def _validation_due(self, epoch: int) -> bool:
        """Whether to validate after ``epoch``; every rank gets rank 0's answer."""
        if self.val is None:
            return False
        every = self.cfg.val_every
        if every is not None:
            return every > 0 and epoch % every == 0
        plan = self.val_plan
        # The first epoch end of an invocation validates (and measures); then the plan's.
        due = plan is None or epoch - self.last_val_epoch >= plan.every
        return self.ctx.any_true(self.ctx.main and due)

    def _validate(self, stop: StopRequest) -> None:
        if self.ctx.main and self.val is not None:
            began = time.monotonic()
            try:
                self._validate_main(stop)
            finally:
                self.clock.paused += time.monotonic() - began
        self.ctx.barrier()

    def _validate_main(self, stop: StopRequest) -> None:
        """One validation: shown slice by slice, interruptible, sized on its first run."""
        assert self.val is not None
        cfg, c = self.cfg, self.counters
        epoch = c.epoch
        self.last_val_epoch = epoch
        model = cast(Network, self.ema.model) if self.ema is not None else self.model
        n = len(self.val)

        def report(done: int, total: int) -> None:
            self.events.progress("validate", done, total, epoch=epoch, parent="train")

        rows: list[dict[str, float]] = []
        if self.val_plan is None and (cfg.val_every is None or cfg.val_limit is None):
            guess = validation_indices(n, MAX_SLICES if cfg.val_limit is None else cfg.val_limit)
            report(0, len(guess))
            if stop.requested:
                self.events.log(f"validation at epoch {epoch} skipped: stop requested")
                return
            began = time.monotonic()
            rows.append(self.validator.slice_metrics(model, self.scheme, 0))
            self.val_plan = self._plan(time.monotonic() - began)
            self.events.log(self.val_plan.describe())
        limit = self.val_plan.slices if self.val_plan is not None else cfg.val_limit or 0
        indices = validation_indices(n, limit)
        first = len(rows)  # slice 0 is first in every set, and may be measured already
        report(first, len(indices))
        try:
            rows += self.validator.run(
                model,
                self.scheme,
                indices[first:],
                on_slice=lambda done, total: report(first + done, first + total),
                should_stop=lambda: stop.requested,
            )
        except ValidationStopped as exc:
            self.events.log(
                f"validation at epoch {epoch} interrupted after {first + exc.done} of "
                f"{len(indices)} slices (stop requested); its metrics are dropped"
            )
            return
        metrics = mean_metrics(rows)
        self.last_metrics = metrics
        for name, value in metrics.items():
            self.events.metric(f"val_{name}", value, step=c.step, epoch=epoch)
        if metrics["mae_hu"] < c.best_mae:
            c.best_mae = metrics["mae_hu"]
            self._save_named("best")

    def _measure_steps_curve(self) -> None:
        """Validation RMSE and time per slice at 1, 2, 4 and K steps, for ``--steps auto``.

        On the validation slices and count training validates with; skipped (with a log
        line) without a validation split, and abandoned at a stop request, so the final
        model is still saved at once (it then keeps its configured steps).
        """
        if not has_steps(self.scheme):
            return
        if self.val is None:
            self.events.log(
                "steps curve not measured: no validation (--val-every 0 or no val split); "
                "denoising will use the configured steps"
            )
            return
        cfg = self.cfg
        if self.val_plan is not None:
            limit = self.val_plan.slices
        else:
            limit = MAX_SLICES if cfg.val_limit is None else cfg.val_limit
        indices = validation_indices(len(self.val), limit)
        model = cast(Network, self.ema.model) if self.ema is not None else self.model
        epoch = self.counters.epoch

        def report(done: int, total: int) -> None:
            self.events.progress("steps-curve", done, total, epoch=epoch, parent="train")

        began = time.monotonic()
        with StopRequest() as stop:
            try:
                points = measure_steps_curve(
                    self.validator,
                    model,
                    self.scheme,
                    indices=indices,
                    on_slice=report,
                    should_stop=lambda: stop.requested,
                )
            except ValidationStopped:
                self.events.log("steps curve abandoned (stop requested); final model saved")
                return
        self.steps_curve = curve_record(
            points,
            device=_device_name(self.ctx.device),
            slice_shape=self.val.shape,
            slices=len(indices),
        )
        curve, _ = read_curve(self.steps_curve)
        if curve is not None:
            self.events.log(
                f"steps curve ({curve.where()}; validation RMSE, time per slice) "
                f"{curve.describe()}; --steps auto will use {self.steps_curve['steps_auto']} "
                f"(measured in {time.monotonic() - began:.0f} s)"
            )

    def _plan(self, slice_seconds: float) -> ValidationPlan:
        """Size what the user left unset from this invocation's measured costs."""
        cfg = self.cfg
        assert self.val is not None
        run_epochs = cfg.epochs
        if cfg.max_steps:
            run_epochs = min(run_epochs, -(-cfg.max_steps // self.per_epoch))
        return plan_validation(
            available=len(self.val),
            slice_seconds=slice_seconds,
            epoch_seconds=self.clock.step_seconds() * self.per_epoch,
            every=cfg.val_every,
            limit=cfg.val_limit,
            epochs_left=run_epochs - self.counters.epoch,
        )


def _device_name(device: torch.device) -> str:
    """'cpu', or 'cuda:0 (NVIDIA H200)': what the curve's times were measured on."""
    if device.type == "cuda":
        with contextlib.suppress(RuntimeError, AssertionError):
            return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)


class _Clock:
    """Where this invocation's wall time went: training steps, or paused for the rest."""

    def __init__(self) -> None:
        self.last_save = time.monotonic()  # the clock cadence counts from the start
        self.saved = False  # a periodic checkpoint written in this invocation
        self.paused = 0.0  # seconds in validation and checkpoints
        self._first: float | None = None
        self._sum = 0.0
        self._count = 0

    def count_step(self, seconds: float) -> None:
        if self._first is None:
            self._first = seconds
        else:
            self._sum += seconds
            self._count += 1

    def step_seconds(self) -> float:
        """Mean training step; the first (warm-up: allocation, kernel choice) is left out."""
        if self._count:
            return self._sum / self._count
        return self._first or 0.0


def train(
    cfg: TrainConfig, reporter: Reporter | None = None, resume: bool = False
) -> dict[str, Any]:
    """Train per ``cfg``; returns the ``done`` event's fields (status, step, checkpoint...)."""
    return Trainer(cfg, reporter or Reporter(), resume).run()
