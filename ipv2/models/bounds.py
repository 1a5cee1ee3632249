"""Bounds on network hyper-parameters, checked before any network is built.

A ``model.json`` or a ``--model-param`` is user input: ``base`` 100000 asks for a
network of 10^14 parameters, and building it ends in an allocator traceback (or the
kernel's OOM killer) long after the mistake. So every network is first described, not
built:

1. each hyper-parameter is checked for its type and a range no sensible network leaves
   (positive integer widths, 1 to :data:`MAX_LEVELS` positive multipliers, dropout in
   [0, 1), an odd kernel ...), with a message naming it;
2. the exact parameter count comes from building the network on PyTorch's ``meta``
   device, where tensors have shapes but no storage: it costs milliseconds and no
   memory whatever the widths, and it can never drift from the real architecture the way
   a hand-written formula could;
3. a count above :func:`max_parameters` (default :data:`DEFAULT_MAX_PARAMS`, one billion:
   25 times the paper's 39.5 M FFM, 4 GB of float32 weights before gradients and Adam
   state) is refused. ``IPV2_MAX_MODEL_PARAMS=<count>`` raises (or lowers) the limit for
   anyone who really means it.

:func:`activation_bytes` estimates the feature maps one forward pass keeps alive for a
given input size, so callers that know the slice size (denoising) can refuse or shrink
a batch before the first allocation instead of after it fails.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from ipv2.core.errors import InputError

PARAMS_ENV = "IPV2_MAX_MODEL_PARAMS"
DEFAULT_MAX_PARAMS = 1_000_000_000
# Hard ranges, independent of the limit above: values beyond them are typos or attacks,
# and they keep even the meta-device build's shape arithmetic far from int64 overflow.
MAX_CHANNELS = 1 << 20  # widest layer: base x largest multiplier, or RED-CNN's width
MAX_LEVELS = 8  # UNet levels (stride 2^7, 2^8 for FFM: beyond that slices vanish)
MAX_IN_CHANNELS = 64
MAX_CONTEXT = 16  # CoreDiff neighbours on each side
MAX_KERNEL = 31


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _int_in(name: str, key: str, value: Any, *, low: int, high: int) -> None:
    if not _is_int(value) or not low <= value <= high:
        raise InputError(
            f"network {name!r}: {key} must be an integer from {low} to {high}, got {value!r}"
        )


def validate_hparams(name: str, params: Mapping[str, Any]) -> None:
    """Refuse a hyper-parameter of the wrong type or outside its sane range, by name.

    Checks go by key, so every architecture sharing a key shares its rule; keys this
    module does not know are left to the constructor.
    """
    for key, value in params.items():
        if key == "in_channels":
            _int_in(name, key, value, low=1, high=MAX_IN_CHANNELS)
        elif key in ("base", "width"):
            _int_in(name, key, value, low=1, high=MAX_CHANNELS)
        elif key == "context":
            _int_in(name, key, value, low=0, high=MAX_CONTEXT)
        elif key == "kernel":
            _int_in(name, key, value, low=1, high=MAX_KERNEL)
            if value % 2 == 0:
                raise InputError(f"network {name!r}: kernel must be odd, got {value}")
        elif key == "dropout":
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            if not ok or not 0.0 <= float(value) < 1.0:
                raise InputError(
                    f"network {name!r}: dropout must be a number in [0, 1), got {value!r}"
                )
        elif key == "mults":
            _check_mults(name, value, params.get("base"))


def _check_mults(name: str, mults: Any, base: Any) -> None:
    if (
        not isinstance(mults, (list, tuple))
        or not 1 <= len(mults) <= MAX_LEVELS
        or not all(_is_int(m) and m >= 1 for m in mults)
    ):
        raise InputError(
            f"network {name!r}: mults must be a list of 1 to {MAX_LEVELS} positive integers "
            f"(channel multipliers per level, e.g. [1,2,4,8]), got {mults!r}"
        )
    if _is_int(base) and base * max(mults) > MAX_CHANNELS:
        raise InputError(
            f"network {name!r}: base x largest multiplier is {base * max(mults)} channels, "
            f"more than {MAX_CHANNELS}; lower base or mults"
        )


def parameter_count(constructor: Callable[..., nn.Module], params: Mapping[str, Any]) -> int:
    """The exact number of parameters, from a build on the ``meta`` device (no storage)."""
    with torch.device("meta"):
        network = constructor(**params)
    return sum(p.numel() for p in network.parameters())


def max_parameters() -> int:
    """The parameter limit: ``IPV2_MAX_MODEL_PARAMS`` when set (``2e9`` works), else 1e9."""
    raw = os.environ.get(PARAMS_ENV, "").strip()
    if not raw:
        return DEFAULT_MAX_PARAMS
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not math.isfinite(value) or value < 1:
        raise InputError(f"{PARAMS_ENV} must be a positive number of parameters, got {raw!r}")
    return int(value)


def check_parameter_count(
    name: str, params: Mapping[str, Any], count: int, *, defaults: Mapping[str, Any]
) -> None:
    """Refuse ``count`` above :func:`max_parameters`, naming the parameters that caused it."""
    limit = max_parameters()
    if count <= limit:
        return
    changed = {k: v for k, v in params.items() if defaults.get(k) != v} or dict(params)
    given = ", ".join(f"{k}={_compact(v)}" for k, v in changed.items())
    raise InputError(
        f"network {name!r} with {given} would have {_count(count)} parameters "
        f"({_bytes(4 * count)} of float32 weights), above the limit of {_count(limit)}; "
        f"lower {', '.join(changed)}, or set {PARAMS_ENV}=<count> to allow more"
    )


def activation_bytes(
    params: Mapping[str, Any], *, height: int, width: int, batch: int = 1, bytes_per_value: int = 4
) -> int:
    """Rough peak size of the feature maps one inference pass holds, in bytes.

    UNet family: every skip connection is alive until the up path consumes it, plus a
    few working maps of the widest stage (a residual block's normalised, activated and
    convolved copies; FFM's spectra). RED-CNN: its three encoder shortcuts plus working
    maps. The working-map factors were fitted to the peak memory growth measured on CPU
    (UNet, FFM, Cold Diffusion at 256-1024 pixels: within about 30%); it is an estimate for
    refusing the absurd and sizing batches, not an accounting.
    """
    pixels = int(height) * int(width)
    if "mults" in params:
        base = int(params["base"])
        mults = [int(m) for m in params["mults"]]
        stored = base  # conv_in's output
        widest = base
        for level, mult in enumerate(mults):
            area = 1.0 / 4**level
            stored += base * mult * area * (2 if level < len(mults) - 1 else 1)
            widest = max(widest, base * mult * area)
        values = (stored + 14 * widest) * pixels
    else:
        values = 8 * int(params.get("width", 1)) * pixels
    return int(values * batch * bytes_per_value)


def _compact(value: Any) -> str:
    return str(value).replace(" ", "") if isinstance(value, (list, tuple)) else str(value)


def _count(n: int) -> str:
    """Exact while readable (``52,081``), scientific beyond (``9.62e+13``)."""
    return f"{n:,}" if n < 10**7 else f"{n:.3g}"


def _bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000:
            return f"{n:.3g} {unit}"
        n /= 1000
    return f"{n:.3g} PB"
