"""Counts far beyond any useful value: refused unless confirmed, with the time they'd take.

``--steps 1000000`` on four small slices, or ``--epochs 100000000``, is almost always a
typo or an extra zero, and it does not fail: it runs for days while looking busy. The
bounds sit well above anything the methods use (the paper samples in 10 steps, Cold
Diffusion and CoreDiff in tens, and trains for 200 epochs), so normal use never meets
them, and ``--allow-long`` (``allow_long=True``) runs any count on purpose.

Every refusal says how long the run would take and how that estimate was made: from a
measured network pass where the caller has one (denoising), otherwise from a stated
optimistic per-step time, so the true duration is longer still.
"""

from __future__ import annotations

# Sampler steps per slice: DDPM's 1000 is the most any scheme here was designed for.
MAX_SAMPLER_STEPS = 1000
# Training epochs: 50 times the paper's 200.
MAX_EPOCHS = 10_000
# Training steps: at an optimistic 10 ms a step, 100 million steps are 11 days.
MAX_TRAIN_STEPS = 100_000_000
# The fastest a training step gets (a tiny network, a small batch, a fast GPU), so an
# estimate from it is a lower bound on the real duration.
FASTEST_TRAIN_STEP_S = 0.01
# The fastest an epoch gets (a handful of slices), likewise a lower bound.
FASTEST_EPOCH_S = 1.0

ALLOW_FLAG = "--allow-long"


def describe_duration(seconds: float) -> str:
    """``seconds`` in the largest unit that keeps a readable number (``3.2 days``)."""
    units = (
        ("years", 365.25 * 86400),
        ("days", 86400.0),
        ("h", 3600.0),
        ("min", 60.0),
    )
    for name, size in units:
        if seconds >= size:
            return f"{seconds / size:.3g} {name}"
    return f"{seconds:.3g} s"


def sampler_steps_refusal(
    steps: int, *, estimate_s: float, basis: str, default_steps: int | None = None
) -> str | None:
    """The message refusing ``steps`` sampler steps, or ``None`` when they are in bounds.

    ``estimate_s`` is the whole run's expected duration and ``basis`` says how it was
    obtained (a measured pass, a per-step guess), both shown to the user.
    """
    if steps <= MAX_SAMPLER_STEPS:
        return None
    usual = f"; this model's own is {default_steps}" if default_steps is not None else ""
    return (
        f"{steps} sampler steps is far beyond useful sampling (above {MAX_SAMPLER_STEPS}"
        f"{usual}): it would take about {describe_duration(estimate_s)} ({basis}); "
        f"pass {ALLOW_FLAG} to run it anyway"
    )


def training_counts_refusal(
    *, epochs: int | None, max_steps: int | None, sampler_steps: int | None = None
) -> str | None:
    """The message refusing training counts far beyond use, or ``None`` when all are sane.

    A run stops at whichever of ``epochs`` and ``max_steps`` comes first, but each is
    checked alone: a count that large is a typo whichever bound it is. ``sampler_steps``
    (the scheme's steps) is what every validation samples with.
    """
    if epochs is not None and epochs > MAX_EPOCHS:
        return (
            f"--epochs {epochs} is far beyond any useful training (above {MAX_EPOCHS}; the "
            f"paper trains 200): even at {FASTEST_EPOCH_S:g} s an epoch (a tiny dataset, a lower "
            f"bound) it would run for {describe_duration(epochs * FASTEST_EPOCH_S)}; pass "
            f"{ALLOW_FLAG} to run it anyway, or use --max-time to bound it"
        )
    if max_steps is not None and max_steps > MAX_TRAIN_STEPS:
        return (
            f"--max-steps {max_steps} is far beyond any useful training (above "
            f"{MAX_TRAIN_STEPS}): even at {FASTEST_TRAIN_STEP_S:g} s a step (a tiny network "
            "on a fast GPU, a lower bound) it would run for "
            f"{describe_duration(max_steps * FASTEST_TRAIN_STEP_S)}; pass {ALLOW_FLAG} to run "
            "it anyway"
        )
    if sampler_steps is not None and sampler_steps > MAX_SAMPLER_STEPS:
        return (
            f"--steps {sampler_steps} is far beyond useful sampling (above "
            f"{MAX_SAMPLER_STEPS}): every validation and every later denoising would run "
            f"that many network passes per slice; pass {ALLOW_FLAG} to train it anyway"
        )
    return None
