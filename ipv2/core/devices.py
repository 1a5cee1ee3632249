"""Choosing the torch device and the CPU threads: one rule for every command.

``auto`` prefers CUDA (each distributed rank its own GPU), then Apple's MPS, then the
CPU; asking for a device that is not there is an error that says what to use instead,
never a silent fallback that would make a GPU run crawl on the CPU unnoticed. Every
compute command takes ``--threads`` (:func:`add_threads_option`, :func:`apply_threads`).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

from ipv2.core.errors import InputError
from ipv2.core.thread_pool import default_worker_count, set_worker_count


def resolve_device(name: str | None, local_rank: int = 0, allow_mps: bool = True) -> torch.device:
    """``auto`` picks CUDA (this rank's GPU), then MPS, then CPU; absent devices are refused.

    ``allow_mps=False`` is for code whose operations MPS lacks (sparse matrix products):
    there ``auto`` and ``mps`` both give the CPU.
    """
    import torch  # here, not at the top: commands that list or inspect start in a blink

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


def add_threads_option(parser: argparse.ArgumentParser) -> None:
    """``--threads N``: CPU threads for torch and the engine's slice pool (see :func:`apply_threads`)."""
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        metavar="N",
        help="CPU threads for torch and the slice pool (default: the cores available to this "
        "process, or IPV2_THREADS)",
    )


def apply_threads(requested: int | None) -> int:
    """Use ``requested`` CPU threads (default: the cores available) without oversubscription.

    torch's own default counts the machine's cores, not the ones this process may use,
    and OpenCV starts a pool of its own inside every call; on a 2-core share that ran 2x
    more threads than cores and spent as much time in the kernel as computing. So one
    number sets torch's intra-op threads and the engine's slice pool, and OpenCV runs
    single-threaded inside the pool's workers (the pool already spreads slices over the
    cores). Returns the count applied.
    """
    if requested is not None and requested < 1:
        raise InputError(f"--threads must be at least 1, got {requested}")
    count = requested if requested is not None else default_worker_count()
    import torch

    torch.set_num_threads(count)
    set_worker_count(count)
    cv2 = sys.modules.get("cv2")
    if cv2 is not None:
        cv2.setNumThreads(1)
    else:  # read by OpenCV when it is first imported
        os.environ["OPENCV_FOR_THREADS_NUM"] = "1"
    return count


def parse_batch(text: str) -> int | None:
    """``--batch-size`` as typed: ``auto`` (None: the engine sizes it) or a positive count."""
    if str(text).strip().lower() == "auto":
        return None
    try:
        value = int(text)
    except ValueError:
        raise InputError(f"--batch-size must be a positive integer or auto, got {text!r}") from None
    if value < 1:
        raise InputError(f"--batch-size must be at least 1, got {value}")
    return value
