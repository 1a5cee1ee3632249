"""The demo's fidelity checks: each bar passes on figures that clear it and fails on a harm."""

from __future__ import annotations

from typing import Any

from ipv2.demo.checks import fidelity_checks
from ipv2.demo.report import _checks_list


def _row(
    rmse: tuple[float, float, float], bias: tuple[float, float, float], noise: tuple[float, float]
) -> dict[str, Any]:
    row: dict[str, Any] = {}
    for i, region in enumerate(("background", "body", "lung")):
        row[f"rmse_{region}_hu"] = rmse[i]
        row[f"bias_{region}_hu"] = bias[i]
    row["noise_background_hu"], row["noise_lung_hu"] = noise
    return row


# The figures of docs/ablation.md: input, IPv1, and IPv2 {1,2} with and without the band.
INPUT = _row((102, 179, 110), (1, 27, -12), (100, 102))
IPV1 = _row((78, 142, 104), (21, -4, -12), (70, 97))
IPV2 = _row((29, 92, 66), (5, 3, -7), (22, 53))
IPV2_LITERAL_L = _row((37, 219, 69), (-6, -44, 2), (27, 58))


def test_the_fixed_model_clears_every_bar() -> None:
    checks = fidelity_checks(INPUT, IPV1, IPV2)
    assert len(checks) == 9 and all(c.passed for c in checks), [c for c in checks if not c.passed]


def test_the_body_regression_fails_exactly_the_body_bars() -> None:
    failed = {c.name for c in fidelity_checks(INPUT, IPV1, IPV2_LITERAL_L) if not c.passed}
    assert failed == {
        "body RMSE at least 20% below the input's",
        "body RMSE within 1.1x the IPv1-trained model's",
        "body |bias| at most 15 HU",
    }


def test_a_missing_figure_fails_instead_of_passing() -> None:
    partial = {k: v for k, v in IPV2.items() if k != "rmse_lung_hu"}
    lung = next(c for c in fidelity_checks(INPUT, IPV1, partial) if c.name.startswith("lung RMSE"))
    assert not lung.passed and "?" in lung.measured


def test_the_report_lists_failures_in_bold() -> None:
    text = _checks_list([c.to_json() for c in fidelity_checks(INPUT, IPV1, IPV2_LITERAL_L)])
    assert text.count("<b>FAIL</b>") == 3 and text.count("<li>pass") == 6
