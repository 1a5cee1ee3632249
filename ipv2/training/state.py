"""Capture and restore the full training state without pickle.

Tensors (raw weights, optimizer moments, RNG states as uint8) go to safetensors; the
optimizer's nested structure and the counters go to JSON through
:func:`ipv2.io.checkpoints.flatten`. Together with data order and augmentations being pure
functions of (seed, epoch, index) and per-step reseeding, this makes a resume bit-exact
on CPU.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ipv2.io.checkpoints import TrainState, flatten, unflatten
from ipv2.training.ema import EMA


def capture(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    ema: EMA | None,
    *,
    scaler: torch.amp.GradScaler | None,
    counters: dict[str, Any],
) -> TrainState:
    tensors: dict[str, torch.Tensor] = {}
    for k, v in model.state_dict().items():
        tensors[f"model.{k}"] = v
    if ema is not None:
        for k, v in ema.model.state_dict().items():
            tensors[f"ema.{k}"] = v
    opt_skeleton = flatten(optimizer.state_dict(), "opt", tensors)
    tensors["rng.torch_cpu"] = torch.get_rng_state()
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s
    scalars = dict(counters)
    scalars["optimizer"] = opt_skeleton
    scalars["ema_updates"] = ema.updates if ema is not None else 0
    scalars["scaler"] = scaler.state_dict() if scaler is not None else None
    return TrainState(tensors, scalars)


def restore(
    state: TrainState,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    *,
    ema: EMA | None,
    scaler: torch.amp.GradScaler | None,
) -> dict[str, Any]:
    """Load everything back; returns the counters (step, epoch, batch, best, ...)."""
    t = state.tensors
    model.load_state_dict({k[6:]: v for k, v in t.items() if k.startswith("model.")}, strict=True)
    if ema is not None:
        ema.model.load_state_dict(
            {k[4:]: v for k, v in t.items() if k.startswith("ema.")}, strict=True
        )
        ema.updates = int(state.scalars.get("ema_updates", 0))
    optimizer.load_state_dict(unflatten(state.scalars["optimizer"], t))
    torch.set_rng_state(t["rng.torch_cpu"])
    cuda_states = [t[f"rng.cuda.{i}"] for i in range(len(t)) if f"rng.cuda.{i}" in t]
    if cuda_states and torch.cuda.is_available() and len(cuda_states) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda_states)
    if scaler is not None and state.scalars.get("scaler"):
        scaler.load_state_dict(state.scalars["scaler"])
    return {
        k: v for k, v in state.scalars.items() if k not in ("optimizer", "ema_updates", "scaler")
    }
