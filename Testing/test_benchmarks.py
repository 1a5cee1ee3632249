"""Benchmarks run and compare like with like (they print figures; nothing is timed here)."""

from __future__ import annotations

import json

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


def test_model_benchmark_shows_ffm_beside_its_plain_form(
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["bench", "--events", "jsonl", "model", "--models", "ffm", "--sizes", "64"]
    argv += ["--base", "8", "--repeats", "1", "--train-steps", "0", "--device", "cpu"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "ffm-plain" in out and "ffm time / ffm-plain time: 64 px" in out
    done = [json.loads(line) for line in out.splitlines() if line.startswith("{")][-1]
    rows = {row["model"]: row for row in done["rows"]}
    assert set(rows) == {"ffm", "ffm-plain"}
    assert rows["ffm"]["max_diff_64"] < 1e-3 and rows["ffm"]["vs_plain_64"] > 0
