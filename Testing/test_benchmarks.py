"""Benchmarks run and compare like with like (they print figures; nothing is timed here)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from factories import tiny_checkpoint

from ipv2.cli import main
from ipv2.io.checkpoints import load_checkpoint
from ipv2.models.registry import build


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


def test_model_benchmark_shows_ffm_beside_its_fast_form(
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["bench", "--events", "jsonl", "model", "--models", "ffm", "--sizes", "64"]
    argv += ["--base", "8", "--repeats", "1", "--train-steps", "0", "--device", "cpu"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "ffm-fast" in out and "ffm-fast time / ffm time: 64 px" in out
    done = [json.loads(line) for line in out.splitlines() if line.startswith("{")][-1]
    rows = {row["model"]: row for row in done["rows"]}
    assert set(rows) == {"ffm", "ffm-fast"}
    assert rows["ffm-fast"]["max_diff_64"] < 1e-3 and rows["ffm-fast"]["vs_plain_64"] > 0


# ---------------------------------------------------------------------------- bench denoise


def _bench_denoise(argv: list[str], capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    """``ipv2 bench --events jsonl denoise ...`` on the CPU: its ``done`` event."""
    base = ["bench", "--events", "jsonl", "denoise", "--device", "cpu", "--threads", "1"]
    assert main([*base, *argv]) == 0
    captured = capsys.readouterr()
    events = [json.loads(line) for line in captured.out.splitlines()]  # stdout: events only
    assert "series time" in captured.err  # under jsonl the table goes to stderr
    done = [e for e in events if e["event"] == "done"]
    assert len(done) == 1 and done[0]["status"] == "ok"
    return dict(done[0])


def test_denoise_benchmark_times_a_random_network(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--arch", "ffm", "--base", "8", "--slices", "3", "--size", "64", "--steps", "2"]
    done = _bench_denoise([*argv, "--half"], capsys)  # --half: autocast on CUDA only
    params = sum(p.numel() for p in build("ffm", base=8).parameters())
    assert (done["slices"], done["size"], done["steps"], done["steps_how"]) == (3, 64, 2, "given")
    assert done["batch_how"] == "auto" and 1 <= done["batch_size"] <= 4  # the CPU's cap
    assert (done["arch"], done["base"], done["params"]) == ("ffm", 8, params)
    assert done["model"] == "random weights" and done["scheme"] == "flow"
    assert (done["device"], done["threads"], done["precision"]) == ("cpu", 1, "float32")
    assert done["half_requested"] is True
    assert done["oom_retries"] == 0 and done["peak_memory_bytes"] > 0
    assert done["series_seconds"] > 0 and done["seconds_per_slice"] > 0


def test_denoise_benchmark_times_a_model_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tiny_checkpoint(tmp_path / "tiny")
    argv = ["--model", str(folder), "--slices", "2", "--size", "64", "--batch-size", "1"]
    done = _bench_denoise(argv, capsys)
    loaded = load_checkpoint(folder)
    assert done["model"] == str(loaded.path) and (done["arch"], done["base"]) == ("ffm", 8)
    assert done["params"] == sum(p.numel() for p in loaded.model.parameters())
    # No measured steps curve in the folder: auto takes the model's configured 10 steps.
    assert (done["steps"], done["steps_how"]) == (10, "configured")
    assert (done["batch_size"], done["batch_how"], done["slices"]) == (1, "given", 2)
    assert done["series_seconds"] > 0


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--base", "8", "--slices", "0", "--size", "64"], "--slices must be at least 1"),
        (["--base", "8", "--slices", "2", "--size", "72"], "--size 72 is not a multiple of 16"),
        (["--base", "8", "--batch-size", "0"], "--batch-size must be at least 1"),
        (["--arch", "redcnn", "--base", "8"], "has no base width"),
        (["--model", "MODEL", "--arch", "unet"], "give one or the other"),
    ],
)
def test_denoise_benchmark_refuses_bad_requests_in_one_line(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [str(tmp_path) if a == "MODEL" else a for a in argv]
    assert main(["bench", "denoise", "--device", "cpu", "--threads", "1", *argv]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0]
