"""Training: the loop (``train``), its configuration and the weak denoiser (Module 3).

``train(TrainConfig(data=..., output=...), reporter)`` runs single-process or under
torchrun (DDP); ``weak_denoise(volume, checkpoint)`` applies a weak denoiser.
"""

from ipv2.train.config import TrainConfig
from ipv2.train.loop import latest_checkpoint, train
from ipv2.train.weak import weak_denoise

__all__ = ["TrainConfig", "latest_checkpoint", "train", "weak_denoise"]
