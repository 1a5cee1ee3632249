"""Network registry: name -> constructor, default hyper-parameters and default scheme.

``build(name, **overrides)`` is the only way the trainer, the checkpoint loader and the
benchmarks create networks, so a checkpoint's ``model.json`` (name + hyper-parameters)
always rebuilds exactly the architecture that wrote it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ipv2.core.errors import InputError
from ipv2.models.bounds import check_parameter_count, parameter_count, validate_hparams
from ipv2.models.colddiff import ColdDiffusionNet
from ipv2.models.common import Network
from ipv2.models.corediff import CoreDiffNet
from ipv2.models.ffm import FFM
from ipv2.models.redcnn import REDCNN
from ipv2.models.unet import UNet


@dataclass(frozen=True)
class ModelSpec:
    """How to build one network and which scheme trains it unless told otherwise."""

    name: str
    constructor: Callable[..., Network]
    defaults: Mapping[str, Any]
    scheme: str
    summary: str
    tiny: Mapping[str, Any] = field(default_factory=dict)


_UNET = {"in_channels": 1, "base": 64, "mults": [1, 2, 4, 8], "dropout": 0.1}

MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            "ffm",
            FFM,
            _UNET,
            scheme="flow",
            summary="frequency-domain flow matching UNet (the paper's best)",
            tiny={"base": 8, "mults": [1, 2]},
        ),
        ModelSpec(
            "unet",
            UNet,
            _UNET,
            scheme="flow",
            summary="DDPM-style UNet for plain flow matching (FM)",
            tiny={"base": 8, "mults": [1, 2]},
        ),
        ModelSpec(
            "colddiff",
            ColdDiffusionNet,
            _UNET,
            scheme="colddiff",
            summary="Cold Diffusion restorer (DDPM UNet predicting the clean image)",
            tiny={"base": 8, "mults": [1, 2]},
        ),
        ModelSpec(
            "corediff",
            CoreDiffNet,
            {**_UNET, "context": 0},
            scheme="corediff",
            summary="CoreDiff restorer conditioned on the low-dose slice, with error modulation",
            tiny={"base": 8, "mults": [1, 2]},
        ),
        ModelSpec(
            "redcnn",
            REDCNN,
            {"in_channels": 1, "width": 96, "kernel": 5},
            scheme="regression",
            summary="RED-CNN one-pass network (the weak denoiser, and a baseline)",
            tiny={"width": 16},
        ),
    )
}


# Names that older model.json files and command lines use for a network that was renamed.
ALIASES: dict[str, str] = {"regressor": "redcnn"}


def get_spec(name: str) -> ModelSpec:
    try:
        return MODELS[ALIASES.get(name, name)]
    except KeyError:
        raise InputError(
            f"unknown network {name!r}; available: {', '.join(MODELS)} (ipv2 train --list-models)"
        ) from None


def resolve_hparams(name: str, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Defaults merged with overrides; unknown keys are refused by name."""
    spec = get_spec(name)
    params = dict(spec.defaults)
    for key, value in (overrides or {}).items():
        if key not in params:
            raise InputError(
                f"network {name!r} has no hyper-parameter {key!r}; it takes {', '.join(params)}"
            )
        params[key] = list(value) if isinstance(value, (list, tuple)) else value
    return params


def checked_hparams(name: str, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """:func:`resolve_hparams`, then refused unless within :mod:`ipv2.models.bounds`.

    Types and ranges first, then the exact parameter count from a storage-free build on
    the ``meta`` device, so an absurd ``base`` is refused in milliseconds, by name,
    before a single weight is allocated.
    """
    spec = get_spec(name)
    params = resolve_hparams(name, overrides)
    validate_hparams(spec.name, params)
    try:
        count = parameter_count(spec.constructor, params)
    except (TypeError, ValueError) as exc:
        raise InputError(f"network {spec.name!r} cannot be built from {params}: {exc}") from None
    check_parameter_count(spec.name, params, count, defaults=spec.defaults)
    return params


def build(name: str, **overrides: Any) -> Network:
    """A freshly initialised network; use the current torch seed for determinism.

    Hyper-parameters pass :func:`checked_hparams` first: every caller (trainer,
    checkpoint loader, benchmarks) gets the same bounds.
    """
    spec = get_spec(name)
    return spec.constructor(**checked_hparams(name, overrides))
