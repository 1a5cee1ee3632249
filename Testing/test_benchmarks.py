"""Benchmarks run and compare like with like (they print figures; nothing is timed here)."""

from __future__ import annotations

import pytest

from ipv2.cli import main


def test_mixer_benchmark_checks_both_forms_agree(capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(
            [
                "bench",
                "mixer",
                "--size",
                "32",
                "--channels",
                "8",
                "--repeats",
                "1",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "same output: True" in out and "plain rewrite" in out


def test_preview_benchmark_runs_on_a_real_scene(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "preview", "--size", "128", "--repeats", "2"]) == 0
    assert "preview_slice 128x128" in capsys.readouterr().out
