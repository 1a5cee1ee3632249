"""``ipv2 train``'s bounds, checked before anything is read or created.

A network of 10^14 parameters, ``--epochs 100000000`` or a scheme sampling a million
steps per validation slice is refused here with one line, before the dataset is opened
or the run folder exists; ``--allow-long`` lets the counts through on purpose and
``IPV2_MAX_MODEL_PARAMS`` raises the size limit (see :mod:`ipv2.models.bounds`).
"""

from __future__ import annotations

from typing import Any

from ipv2.core.errors import InputError
from ipv2.core.long_runs import training_counts_refusal
from ipv2.models.registry import checked_hparams


def check_training_bounds(cfg: Any, *, allow_long: bool) -> None:
    """Refuse ``cfg`` (a TrainConfig, new or resumed) beyond the model and count bounds."""
    checked_hparams(cfg.model, cfg.model_params)
    if allow_long:
        return
    steps = cfg.scheme_params.get("steps")
    message = training_counts_refusal(
        epochs=cfg.epochs,
        max_steps=cfg.max_steps,
        sampler_steps=steps if isinstance(steps, int) and not isinstance(steps, bool) else None,
    )
    if message:
        raise InputError(message)
