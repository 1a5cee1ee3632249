"""Schemes: exact step counts, exactness on oracles, cancellation, and learning a toy task."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage
from torch import Tensor, nn

from ipv2.errors import CancelledError, InputError
from ipv2.models import MODELS, build
from ipv2.schemes import make_scheme

torch.set_num_threads(1)  # shared cores: two threads under load are far slower


class Oracle(nn.Module):
    """Knows the answer: returns the velocity (flow) or the clean image (others); counts calls."""

    def __init__(self, low: Tensor, high: Tensor, velocity: bool) -> None:
        super().__init__()
        self.low, self.high, self.velocity = low, high, velocity
        self.calls = 0

    def forward(self, x: Tensor, t: Tensor | None = None, cond: Tensor | None = None) -> Tensor:
        self.calls += 1
        return self.high - self.low if self.velocity else self.high


def pair() -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(2, 1, 8, 8, generator=g), torch.randn(2, 1, 8, 8, generator=g)


@pytest.mark.parametrize("k", [1, 3, 10])
def test_euler_with_k_steps_makes_exactly_k_calls(k: int) -> None:
    low, high = pair()
    oracle = Oracle(low, high, velocity=True)
    ticks: list[tuple[int, int]] = []
    out = make_scheme("flow").sample(
        oracle, low, steps=k, callback=lambda i, n: ticks.append((i, n))
    )
    assert oracle.calls == k
    assert ticks == [(i, k) for i in range(1, k + 1)]
    torch.testing.assert_close(out, high)


def test_flow_default_is_ten_steps() -> None:
    low, high = pair()
    oracle = Oracle(low, high, velocity=True)
    make_scheme("flow").sample(oracle, low)
    assert oracle.calls == 10


@pytest.mark.parametrize(("name", "default", "steps"), [("colddiff", 50, 7), ("corediff", 10, 4)])
def test_blend_samplers_call_counts_and_exactness(name: str, default: int, steps: int) -> None:
    low, high = pair()
    scheme = make_scheme(name)
    for k, expected in ((None, default), (steps, steps)):
        oracle = Oracle(low, high, velocity=False)
        out = scheme.sample(oracle, low, steps=k)
        assert oracle.calls == expected
        torch.testing.assert_close(out, high)
    with pytest.raises(InputError):
        scheme.sample(Oracle(low, high, False), low, steps=default + 1)


def test_regression_is_one_call() -> None:
    low, high = pair()
    oracle = Oracle(low, high, velocity=False)
    torch.testing.assert_close(make_scheme("regression").sample(oracle, low), high)
    assert oracle.calls == 1


@pytest.mark.parametrize("name", ["flow", "colddiff", "corediff"])
def test_cancel_stops_between_steps(name: str) -> None:
    low, high = pair()
    oracle = Oracle(low, high, velocity=name == "flow")
    with pytest.raises(CancelledError):
        make_scheme(name).sample(oracle, low, steps=5, cancel=lambda: oracle.calls >= 2)
    assert oracle.calls == 2


def test_unknown_scheme_and_bad_parameters() -> None:
    with pytest.raises(InputError, match="unknown scheme"):
        make_scheme("ddpm")
    with pytest.raises(InputError):
        make_scheme("flow", steps=0)
    with pytest.raises(InputError):
        make_scheme("regression", loss="huber")


def toy(n: int, seed: int) -> tuple[Tensor, Tensor]:
    """Smooth random images (clean) and the same plus white noise (low dose), in [-1, 1]."""
    rng = np.random.default_rng(seed)
    clean = np.stack([ndimage.gaussian_filter(rng.standard_normal((32, 32)), 3) for _ in range(n)])
    clean = clean / clean.std() * 0.4
    low = clean + 0.25 * rng.standard_normal(clean.shape)
    return (
        torch.tensor(low[:, None], dtype=torch.float32),
        torch.tensor(clean[:, None], dtype=torch.float32),
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    ("arch", "scheme"),
    [
        ("ffm", "flow"),
        ("colddiff", "colddiff"),
        ("corediff", "corediff"),
        ("regressor", "regression"),
    ],
)
def test_scheme_learns_the_toy_task(arch: str, scheme: str) -> None:
    train_low, train_high = toy(128, 0)
    val_low, val_high = toy(16, 1)
    torch.manual_seed(0)
    extra = {} if arch == "regressor" else {"dropout": 0.0}
    model = build(arch, **{**MODELS[arch].tiny, **extra})
    s = make_scheme(scheme)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(200):
        idx = torch.randint(0, len(train_low), (4,), generator=g)
        loss = s.loss(model, train_low[idx], train_high[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    mae = float((s.sample(model, val_low) - val_high).abs().mean())
    identity = float((val_low - val_high).abs().mean())
    print(f"{arch}/{scheme}: validation MAE {mae:.4f} vs identity {identity:.4f}")
    assert mae < 0.6 * identity
