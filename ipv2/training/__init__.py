"""Training: the loop (``train``), its configuration, EMA, DDP and validation.

``train(TrainConfig(data=..., output=...), reporter)`` runs single-process or under
torchrun (DDP); the same loop trains the weak denoiser with ``TrainConfig(weak_denoiser=True)``.
"""

from ipv2.runtime.runs import latest_checkpoint
from ipv2.training.config import TrainConfig
from ipv2.training.loop import train

__all__ = ["TrainConfig", "latest_checkpoint", "train"]
