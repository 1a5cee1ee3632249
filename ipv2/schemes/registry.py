"""Scheme registry: name -> class; ``make_scheme(name, **params)`` rebuilds from model.json."""

from __future__ import annotations

from typing import Any

from ipv2.core.errors import InputError
from ipv2.schemes.base import Scheme
from ipv2.schemes.colddiff import ColdDiffusion
from ipv2.schemes.corediff import CoreDiff
from ipv2.schemes.flow import FlowMatching
from ipv2.schemes.regression import Regression

SCHEMES: dict[str, type[Scheme]] = {
    "flow": FlowMatching,
    "colddiff": ColdDiffusion,
    "corediff": CoreDiff,
    "regression": Regression,
}


def make_scheme(name: str, **params: Any) -> Scheme:
    """Build a scheme; ``params`` come from ``Scheme.params()`` or the command line."""
    cls = SCHEMES.get(name)
    if cls is None:
        raise InputError(f"unknown scheme {name!r}; available: {', '.join(SCHEMES)}")
    try:
        return cls(**params)
    except TypeError as exc:
        raise InputError(
            f"scheme {name!r} does not take these parameters {params}: {exc}"
        ) from None
