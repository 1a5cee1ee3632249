"""Schemes: exact step counts, exactness on oracles, cancellation, and learning a toy task."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from scipy import ndimage
from torch import Tensor, nn

from ipv2.core.errors import CancelledError, InputError
from ipv2.models import MODELS, build
from ipv2.schemes import make_scheme
from ipv2.schemes.base import batch_time
from ipv2.schemes.blend import improved_sample, schedule
from ipv2.schemes.solvers import euler, euler_on_grid

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


@pytest.mark.parametrize("steps", [1, 4])
def test_flow_sampler_times_train_where_the_sampler_evaluates(steps: int) -> None:
    """times="sampler" draws t from the Euler grid 0, 1/K, ..., (K-1)/K; uniform does not."""
    seen: dict[str, set[float]] = {}
    for times in ("sampler", "uniform"):
        scheme = make_scheme("flow", steps=steps, times=times)
        calls: list[float] = []

        def model(
            x: Tensor, t: Tensor, cond: Tensor | None = None, calls: list[float] = calls
        ) -> Tensor:
            calls.extend(float(v) for v in t)
            return torch.zeros_like(x)

        torch.manual_seed(0)
        for _ in range(20):
            scheme.loss(model, torch.zeros(8, 1, 4, 4), torch.ones(8, 1, 4, 4))
        seen[times] = set(calls)
    assert seen["sampler"] <= {i / steps for i in range(steps)}
    assert len(seen["sampler"]) == steps  # 160 draws hit every grid time
    assert len(seen["uniform"]) > 100
    # The checkpoint's scheme params rebuild the same scheme; uniform keeps the old params.
    assert make_scheme("flow", steps=steps, times="sampler").params() == {
        "steps": steps,
        "times": "sampler",
    }
    assert make_scheme("flow", steps=steps).params() == {"steps": steps}
    with pytest.raises(InputError, match="times"):
        make_scheme("flow", times="random")


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
        ("redcnn", "regression"),
    ],
)
def test_scheme_learns_the_toy_task(arch: str, scheme: str) -> None:
    train_low, train_high = toy(128, 0)
    val_low, val_high = toy(16, 1)
    torch.manual_seed(0)
    extra = {} if arch == "redcnn" else {"dropout": 0.0}
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


# --- The Euler solver on its own, and the schemes that run on it ---------------------


def test_euler_converges_to_exponential_decay() -> None:
    """dx/dt = -x from x(0) = x0: Euler gives x0 (1 - 1/n)^n, tending to x0 e^-1."""
    x0 = torch.linspace(-2.0, 3.0, 6, dtype=torch.float64).reshape(2, 3)
    exact = x0 * np.exp(-1.0)
    errors = []
    for n in (10, 100, 1000):
        out = euler(lambda x, t: -x, x0, steps=n)
        torch.testing.assert_close(out, x0 * (1.0 - 1.0 / n) ** n, rtol=1e-12, atol=1e-12)
        errors.append(float((out - exact).abs().max()))
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 2e-3  # first order: error ~ e^-1 / (2 n) * |x0|


def test_euler_is_exact_for_a_constant_field_and_time_linear_field() -> None:
    x0 = torch.zeros(3, 1, 4, 4, dtype=torch.float64)
    c = torch.full_like(x0, 0.7)
    torch.testing.assert_close(euler(lambda x, t: c, x0, steps=7, t0=0.5, t1=2.0), x0 + 0.7 * 1.5)
    # dx/dt = t: Euler's left Riemann sum is (t1^2 - t0^2) / 2 - h (t1 - t0) / 2.
    n = 8
    out = euler(lambda x, t: t.to(x.dtype).reshape(-1, 1, 1, 1).expand_as(x), x0, steps=n)
    torch.testing.assert_close(out, torch.full_like(x0, 0.5 - 0.5 / n))


def test_euler_calls_velocity_at_the_step_times_with_batch_time() -> None:
    x0 = torch.zeros(5, 2)
    seen: list[Tensor] = []
    ticks: list[tuple[int, int]] = []

    def velocity(x: Tensor, t: Tensor) -> Tensor:
        seen.append(t.clone())
        return torch.ones_like(x)

    euler(velocity, x0, steps=4, t0=0.25, t1=0.75, callback=lambda i, n: ticks.append((i, n)))
    assert ticks == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert [float(t[0]) for t in seen] == [0.25, 0.375, 0.5, 0.625]
    for t in seen:
        assert t.shape == (5,)
        assert t.dtype == torch.float32
        assert torch.equal(t, t[:1].expand(5))
    with pytest.raises(InputError):
        euler(velocity, x0, steps=0)


def test_euler_on_grid_follows_uneven_and_backward_grids() -> None:
    x0 = torch.ones(2, 3, dtype=torch.float64)
    seen: list[float] = []

    def velocity(x: Tensor, t: Tensor) -> Tensor:
        seen.append(float(t[0]))
        return torch.full_like(x, 2.0)

    out = euler_on_grid(velocity, x0, times=[1.0, 0.75, 0.5, 0.0])
    assert seen == [1.0, 0.75, 0.5]
    torch.testing.assert_close(out, x0 - 2.0)  # v = 2 over t: 1 -> 0
    with pytest.raises(InputError):
        euler_on_grid(velocity, x0, times=[0.0])


class TimeNet(nn.Module):
    """A small network whose output depends on x, t and cond, in float32 arithmetic."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(2, 1, 3, padding=1)
        self.time = nn.Linear(1, 1)

    def forward(self, x: Tensor, t: Tensor, cond: Tensor | None = None) -> Tensor:
        c = x if cond is None else cond
        gain = 1.0 + self.time(t[:, None].float())[:, :, None, None]
        return torch.tanh(self.conv(torch.cat([x, c], 1)) * gain)


@pytest.mark.parametrize("k", [1, 3, 10, 13])
@pytest.mark.parametrize("with_cond", [False, True])
def test_flow_sample_matches_hand_written_euler_bit_for_bit(k: int, with_cond: bool) -> None:
    low, cond = pair()
    c = cond if with_cond else None
    net = TimeNet()
    with torch.no_grad():
        x = low
        dt = 1.0 / k
        for i in range(k):
            x = x + dt * net(x, batch_time(i * dt, low), c)
        out = make_scheme("flow").sample(net, low, steps=k, cond=c)
    assert torch.equal(out, x)


@pytest.mark.parametrize(("total", "steps"), [(50, 50), (50, 7), (10, 4)])
def test_improved_sampler_matches_the_written_out_bansal_loop(total: int, steps: int) -> None:
    """The blend samplers run on euler_on_grid; the result is the original loop's, bit for bit."""
    low, cond = pair()
    net = TimeNet()
    levels = schedule(total, steps)
    with torch.no_grad():
        x = low
        for s, s_next in itertools.pairwise(levels):
            a_s, a_n = 1.0 - s / total, 1.0 - s_next / total
            x0 = net(x, batch_time(a_s, low), cond)
            x = x - (a_s * x0 + (1.0 - a_s) * low) + (a_n * x0 + (1.0 - a_n) * low)
        out = improved_sample(net, low, cond, total=total, steps=steps, callback=None, cancel=None)
    # Bansal's definition x - D(x0, s) + D(x0, s') rounds differently from the fused step.
    torch.testing.assert_close(out, x, rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        x = low
        for s, s_next in itertools.pairwise(levels):
            a_s, a_n = 1.0 - s / total, 1.0 - s_next / total
            x = x + (a_n - a_s) * (net(x, batch_time(a_s, low), cond) - low)
    assert torch.equal(out, x)
