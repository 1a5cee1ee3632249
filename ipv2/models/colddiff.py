"""The Cold Diffusion restoration network (Bansal et al. 2023).

Cold Diffusion's restorer is the DDPM UNet: given the degraded state and its step it
predicts the clean image. It is a separate registry entry (not an alias of ``unet``) so
its checkpoints say which scheme trained it and so its defaults can diverge from FM's.
"""

from __future__ import annotations

from ipv2.models.unet import UNet


class ColdDiffusionNet(UNet):
    """DDPM UNet that predicts the normal-dose image from a degraded state and its step."""

    arch = "colddiff"
