"""Generative schemes (losses and samplers), kept apart from the networks.

``make_scheme("flow", steps=10)``; each scheme has ``loss(model, low, high, cond=None)``
and ``sample(model, low, steps=None, callback=None, cancel=None, cond=None)``.
"""

from ipv2.schemes.base import Scheme
from ipv2.schemes.colddiff import ColdDiffusion
from ipv2.schemes.corediff import CoreDiff
from ipv2.schemes.flow import FlowMatching
from ipv2.schemes.registry import SCHEMES, make_scheme
from ipv2.schemes.regression import Regression

__all__ = [
    "SCHEMES",
    "ColdDiffusion",
    "CoreDiff",
    "FlowMatching",
    "Regression",
    "Scheme",
    "make_scheme",
]
