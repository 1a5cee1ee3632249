"""Networks: shapes, size checks, determinism, gradients, and FFM's parameter count."""

from __future__ import annotations

import pytest
import torch

from ipv2.core.errors import InputError
from ipv2.models import MODELS, build
from ipv2.models.common import ResBlock
from ipv2.models.ffm import FFM, FrequencyMixer

torch.set_num_threads(1)  # shared cores: two threads under load are far slower
NAMES = sorted(MODELS)


def tiny(name: str, channels: int = 1, **extra: object) -> torch.nn.Module:
    return build(name, **{**MODELS[name].tiny, "in_channels": channels, **extra})


def call(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    t = torch.full((x.shape[0],), 0.3)
    cond = x if getattr(model, "cond_channels", 0) else None
    return model(x, t, cond)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("channels", [1, 3])
def test_shape_preserved(name: str, channels: int) -> None:
    torch.manual_seed(0)
    model = tiny(name, channels).eval()
    x = torch.randn(2, channels, 32, 48)
    assert call(model, x).shape == x.shape


@pytest.mark.parametrize("name", [n for n in NAMES if n != "redcnn"])
def test_sizes_not_divisible_by_stride_are_refused(name: str) -> None:
    model = tiny(name)
    with pytest.raises(InputError, match="divisible by"):
        call(model, torch.randn(1, 1, 33, 32))


def test_redcnn_takes_any_size() -> None:
    model = tiny("redcnn").eval()
    assert call(model, torch.randn(1, 1, 33, 17)).shape == (1, 1, 33, 17)


@pytest.mark.parametrize("name", NAMES)
def test_wrong_channel_count_is_refused(name: str) -> None:
    with pytest.raises(InputError, match="channel"):
        call(tiny(name, 1), torch.randn(1, 3, 32, 32))


@pytest.mark.parametrize("name", NAMES)
def test_forward_is_deterministic_for_a_seed(name: str) -> None:
    x = torch.randn(2, 1, 32, 32)
    outs = []
    for _ in range(2):
        torch.manual_seed(7)
        outs.append(call(tiny(name).eval(), x))
    assert torch.equal(outs[0], outs[1])
    torch.manual_seed(8)
    assert not torch.equal(outs[0], call(tiny(name).eval(), x))


@pytest.mark.parametrize("name", NAMES)
def test_gradients_are_finite(name: str) -> None:
    torch.manual_seed(0)
    model = tiny(name).train()
    call(model, torch.randn(2, 1, 32, 32)).square().mean().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(float(g.abs().sum()) > 0 for g in grads if g is not None)


def test_ffm_parameter_count_matches_the_authors() -> None:
    """Base 64, multipliers 1, 2, 4, 8, three channels: about 39.5 M (within 1%)."""
    model = FFM(in_channels=3, base=64, mults=(1, 2, 4, 8))
    count = sum(p.numel() for p in model.parameters())
    assert abs(count - 39.5e6) / 39.5e6 < 0.01, count


def test_ffm_mixer_keeps_shape_and_uses_both_branches() -> None:
    torch.manual_seed(0)
    mixer = FrequencyMixer(16)
    x = torch.randn(2, 16, 8, 12)
    y = mixer(x)
    assert y.shape == x.shape
    y.sum().backward()
    assert mixer.magnitude[0].weight.grad is not None
    assert float(mixer.low[1].weight.grad.abs().sum()) > 0  # type: ignore[union-attr]


def test_corediff_condition_with_neighbours() -> None:
    torch.manual_seed(0)
    model = tiny("corediff", context=1).eval()
    x = torch.randn(1, 1, 32, 32)
    assert model(x, torch.zeros(1), torch.randn(1, 3, 32, 32)).shape == x.shape
    with pytest.raises(InputError, match="condition"):
        model(x, torch.zeros(1), None)


def test_registry_refuses_unknown_names() -> None:
    with pytest.raises(InputError, match="unknown network"):
        build("resnet")
    with pytest.raises(InputError, match="no hyper-parameter"):
        build("unet", depth=3)


def test_renamed_network_still_builds_from_its_old_name() -> None:
    """model.json files written before the rename say "regressor"; they must keep loading."""
    old = build("regressor", width=8)
    assert old.arch == "redcnn" and type(old) is type(build("redcnn", width=8))
    with pytest.raises(InputError, match="unknown network"):
        build("regresor")


@pytest.mark.parametrize("name", NAMES)
def test_every_default_network_is_within_the_bounds(name: str) -> None:
    """The size limit refuses the absurd, never a network the registry offers."""
    from ipv2.models.bounds import DEFAULT_MAX_PARAMS, parameter_count
    from ipv2.models.registry import checked_hparams

    params = checked_hparams(name)
    assert parameter_count(MODELS[name].constructor, params) < DEFAULT_MAX_PARAMS / 20


def test_bounds_count_matches_the_authors_ffm() -> None:
    from ipv2.models.bounds import parameter_count

    params = {"in_channels": 3, "base": 64, "mults": [1, 2, 4, 8], "dropout": 0.1}
    assert round(parameter_count(FFM, params) / 1e6, 2) == 39.52


def _perturbed_ffm(**extra: object) -> FFM:
    """A tiny FFM whose norms and biases are not at their initial values (as after training),
    so that every folded term of the CPU inference form carries weight."""
    torch.manual_seed(1)
    model = tiny("ffm", **extra)
    assert isinstance(model, FFM)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("bias") or "norm" in name:
                param.add_(0.1 * torch.randn_like(param))
    return model.eval()


@pytest.mark.parametrize(
    ("batch", "height", "width", "wide"),
    [(1, 64, 64, False), (2, 32, 96, False), (2, 32, 16, True)],
)
def test_ffm_cpu_inference_form_equals_the_plain_form(
    batch: int, height: int, width: int, wide: bool
) -> None:
    # Wide: every convolution Winograd takes (ipv2.models.winograd), in a channels-last
    # 64-channel level and an NCHW 256-channel one (ipv2.models.layouts).
    model = _perturbed_ffm(**({"base": 64, "mults": [1, 4]} if wide else {}))
    x = torch.randn(batch, 1, height, width)
    with torch.no_grad():
        fast = call(model.set_fast(True), x)
        plain = call(model.set_fast(False), x)
    if wide:
        from ipv2.models import winograd
        from ipv2.models.common import Upsample

        taken = [
            m.conv1 if isinstance(m, ResBlock) else m.conv
            for m in model.modules()
            if isinstance(m, ResBlock | Upsample)
        ]
        mixers = [m for m in model.modules() if isinstance(m, FrequencyMixer)]
        taken += [m.low[1] for m in mixers if m.low[1].in_channels >= 64]
        assert len(taken) == 14 and all(conv in winograd._weights for conv in taken)
    assert fast.is_contiguous()
    scale = float(plain.abs().max())
    assert float((fast - plain).abs().max()) <= 1e-4 * scale
    # A real difference (one mixer's phase MLP changed) is far beyond that tolerance.
    mixer = next(m for m in model.modules() if isinstance(m, FrequencyMixer))
    with torch.no_grad():
        mixer.phase[0].bias.add_(1.0)
        changed = call(model.set_fast(True), x)
    assert float((changed - plain).abs().max()) > 1e-2 * scale


def test_ffm_training_and_gradients_use_the_plain_form() -> None:
    model = _perturbed_ffm()
    x = torch.randn(1, 1, 64, 64)
    plain = call(model.set_fast(False), x)  # gradients enabled: the plain form either way
    same = call(model.set_fast(True), x)
    assert torch.equal(plain, same)
    same.square().mean().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
