"""Training configuration: one value, saved as ``<output>/config.json`` and resumed from.

Defaults are the paper's protocol (Adam, lr 1e-4, batch 2, 200 epochs); the rest are
engineering choices documented per field. Only plain JSON values live here, so the file
is the exact record of what a run did.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ipv2.core.errors import InputError
from ipv2.core.json_files import read_json_object

# Fields a --resume may change without altering the result up to the point of stopping.
RESUME_OVERRIDABLE = ("epochs", "max_steps", "max_time", "device", "threads")


_RENAMED = {"weak": "weak_denoiser"}  # old config.json name -> field


@dataclass
class TrainConfig:
    """Everything ``ipv2 train`` needs; see ``ipv2 train --help`` for each option."""

    data: str
    output: str
    model: str = "ffm"
    scheme: str | None = None  # default: the network's registered scheme
    model_params: dict[str, Any] = field(default_factory=dict)
    scheme_params: dict[str, Any] = field(default_factory=dict)
    epochs: int = 200
    batch_size: int = 2
    lr: float = 1e-4
    crop: int | None = None
    flips: bool = False
    ema_decay: float = 0.999  # 0 disables the EMA
    grad_clip: float = 1.0  # max gradient norm; 0 disables clipping
    amp: bool = True  # mixed precision on CUDA only (bf16 where supported, else fp16)
    # None: sized to the device from measured step and slice times (training.budget);
    # a number is the user's and always wins. Old config.json files hold numbers.
    val_every: int | None = None  # epochs between validations; 0 disables
    val_limit: int | None = None  # validation slices (samplers are costly); 0 = all
    checkpoint_every: int | None = None  # epochs between periodic checkpoints; None: clock
    checkpoint_every_steps: int = 0  # additionally every N steps; 0 disables
    checkpoint_minutes: float = 10.0  # the clock: minutes between periodic checkpoints
    keep: int = 3  # periodic checkpoints kept (the best is kept besides)
    log_every: int = 10  # steps between loss metrics
    max_steps: int = 0  # step budget; 0 = none
    max_time: float = 0.0  # time budget in seconds for this invocation; 0 = none
    seed: int = 0
    device: str = "auto"
    threads: int = 0  # torch CPU threads; 0 = the cores available to this process
    weak_denoiser: bool = False  # Module 3: train the weak denoiser on (sim(N), N)
    sim_dose: float = 0.02  # dose fraction of on-the-fly sim(N) for --weak-denoiser
    train_kinds: list[str] = field(default_factory=list)  # [low, high]; empty = default
    val_kinds: list[str] = field(default_factory=list)

    def validate(self) -> None:
        checks = [
            (self.epochs >= 1, f"--epochs must be >= 1, got {self.epochs}"),
            (self.batch_size >= 1, f"--batch-size must be >= 1, got {self.batch_size}"),
            (self.lr > 0, f"--lr must be positive, got {self.lr}"),
            (0 <= self.ema_decay < 1, f"--ema must be in [0, 1), got {self.ema_decay}"),
            (self.grad_clip >= 0, f"--grad-clip must be >= 0, got {self.grad_clip}"),
            (self.crop is None or self.crop >= 8, f"--crop must be >= 8 pixels, got {self.crop}"),
            (self.keep >= 1, f"--keep must be >= 1, got {self.keep}"),
            (_at_least(self.val_every, 0), f"--val-every must be >= 0, got {self.val_every}"),
            (_at_least(self.val_limit, 0), f"--val-limit must be >= 0, got {self.val_limit}"),
            (
                _at_least(self.checkpoint_every, 1),
                f"--checkpoint-every must be >= 1, got {self.checkpoint_every}",
            ),
            (
                self.checkpoint_every_steps >= 0,
                f"--checkpoint-every-steps must be >= 0, got {self.checkpoint_every_steps}",
            ),
            (
                self.checkpoint_minutes > 0,
                f"--checkpoint-minutes must be positive, got {self.checkpoint_minutes}",
            ),
            (self.log_every >= 1, f"--log-every must be >= 1, got {self.log_every}"),
            (self.threads >= 0, f"--threads must be >= 1, got {self.threads}"),
            (self.max_steps >= 0 and self.max_time >= 0, "budgets must be >= 0"),
            (0 < self.sim_dose <= 1, f"--sim-dose must be in (0, 1], got {self.sim_dose}"),
            (len(self.train_kinds) in (0, 2), "--train-kinds takes LOW HIGH"),
            (len(self.val_kinds) in (0, 2), "--val-kinds takes LOW LABEL"),
        ]
        for ok, message in checks:
            if not ok:
                raise InputError(message)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TrainConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        # Fields renamed since: runs started by an earlier version still resume.
        data = {_RENAMED.get(key, key): value for key, value in data.items()}
        unknown = sorted(set(data) - names)
        if unknown:
            raise InputError(
                f"training config has unknown fields {unknown}; written by another version?"
            )
        missing = sorted(n for n in ("data", "output") if n not in data)
        if missing:
            raise InputError(f"training config lacks {missing}; it is damaged")
        defaults = cls(data="", output="")
        for name, value in data.items():
            if value is None and name in _OPTIONAL:
                continue
            expected = _OPTIONAL.get(name, getattr(defaults, name))
            if not _same_kind(value, expected):
                raise InputError(
                    f"training config field {name!r} is {value!r}, not a "
                    f"{type(expected).__name__}; the file is damaged"
                )
        return cls(**data)

    @classmethod
    def load(cls, path: Path) -> TrainConfig:
        try:
            data = read_json_object(path, what="a training config (ipv2 train's config.json)")
        except FileNotFoundError:
            raise InputError(
                f"{path} is missing: {path.parent} is not a training output folder"
            ) from None
        try:
            return cls.from_json(data)
        except InputError as exc:
            raise InputError(f"{path}: {exc}") from None


# Fields whose default is None: the kind of value they hold otherwise.
_OPTIONAL: dict[str, Any] = {
    "scheme": "",
    "crop": 0,
    "val_every": 0,
    "val_limit": 0,
    "checkpoint_every": 0,
}


def _at_least(value: int | None, low: int) -> bool:
    """None (chosen by the run) or a number >= ``low``."""
    return value is None or value >= low


def _same_kind(value: Any, expected: Any) -> bool:
    """JSON's types against a default's: ints pass for floats, bools never for numbers."""
    if isinstance(expected, bool) or isinstance(value, bool):
        return isinstance(value, bool) and isinstance(expected, bool)
    if isinstance(expected, float):
        return isinstance(value, (int, float))
    return isinstance(value, type(expected))
