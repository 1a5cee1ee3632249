"""The networks the paper compares, each in its own file, built through the registry.

All map (B, C, H, W) to (B, C, H, W) and take ``t`` (B,) in [0, 1] (0 = low dose,
1 = normal dose) and an optional condition; see :mod:`ipv2.models.common`.
"""

from ipv2.models.common import Network
from ipv2.models.registry import MODELS, ModelSpec, build, get_spec, resolve_hparams

__all__ = ["MODELS", "ModelSpec", "Network", "build", "get_spec", "resolve_hparams"]
