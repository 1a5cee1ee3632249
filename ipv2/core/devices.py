"""Choosing the torch device: one rule for inference, training and simulation.

``auto`` prefers CUDA (each distributed rank its own GPU), then Apple's MPS, then the
CPU; asking for a device that is not there is an error that says what to use instead,
never a silent fallback that would make a GPU run crawl on the CPU unnoticed.
"""

from __future__ import annotations

import argparse

import torch

from ipv2.core.errors import InputError


def resolve_device(name: str | None, local_rank: int = 0, allow_mps: bool = True) -> torch.device:
    """``auto`` picks CUDA (this rank's GPU), then MPS, then CPU; absent devices are refused.

    ``allow_mps=False`` is for code whose operations MPS lacks (sparse matrix products):
    there ``auto`` and ``mps`` both give the CPU.
    """
    key = (name or "auto").strip().lower()
    if key == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank % torch.cuda.device_count())
        mps = getattr(torch.backends, "mps", None)
        if allow_mps and mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(key)
    except RuntimeError:
        raise InputError(f"unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(
                f"device {name!r} was asked for but this torch has no usable CUDA GPU; "
                "use --device cpu (or auto)"
            )
        if device.index is None:
            device = torch.device("cuda", local_rank % torch.cuda.device_count())
    if device.type == "mps" and not allow_mps:
        return torch.device("cpu")
    if device.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise InputError("device 'mps' was asked for but MPS is not available here")
    return device


def add_device_option(parser: argparse.ArgumentParser) -> None:
    """``--device``, with the choices :func:`resolve_device` understands."""
    parser.add_argument(
        "--device",
        default="auto",
        help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps",
    )
