"""The ``ipv2`` command line as users run it: real subprocesses, real files."""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ipv2.io.volumes import read_volume


def ipv2(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ipv2", *args], capture_output=True, text=True, cwd=cwd, timeout=300
    )


def test_help_lists_every_subcommand() -> None:
    out = ipv2("--help")
    assert out.returncode == 0
    for name in (
        "purify",
        "simulate",
        "build-dataset",
        "train",
        "denoise",
        "evaluate",
        "demo",
        "bench",
        "phantom",
    ):
        assert name in out.stdout


def test_unknown_options_are_refused_with_usage() -> None:
    out = ipv2("phantom", "--out", "x", "--no-such-option")
    assert out.returncode == 2
    assert "unrecognized arguments: --no-such-option" in out.stderr


def test_phantom_writes_pairs_preview_and_truth(tmp_path: Path) -> None:
    out = tmp_path / "ph"
    res = ipv2(
        "phantom", "--out", str(out), "--size", "64", "--slices", "3", "--cases", "2", "--seed", "5"
    )
    assert res.returncode == 0, res.stderr
    for case in ("case000", "case001"):
        folder = out / case
        names = sorted(p.name for p in folder.iterdir())
        assert names == sorted(
            [
                "ndct.nrrd",
                "uldct.nrrd",
                "clean_ref.nrrd",
                "clean_ld.nrrd",
                "labels_ref.nrrd",
                "labels_ld.nrrd",
                "preview.png",
                "phantom.json",
            ]
        )
        nd, ld = read_volume(folder / "ndct.nrrd"), read_volume(folder / "uldct.nrrd")
        assert nd.shape == ld.shape == (3, 64, 64)
        labels = read_volume(folder / "labels_ref.nrrd").array
        assert set(np.unique(labels)) == {0.0, 1.0, 2.0}
    params = json.loads((out / "case001" / "phantom.json").read_text())
    assert params["seed"] == 6 and params["size"] == 64
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "temporary folder left"


def test_phantom_events_are_json_lines(tmp_path: Path) -> None:
    res = ipv2(
        "phantom",
        "--out",
        str(tmp_path / "p"),
        "--size",
        "32",
        "--slices",
        "1",
        "--events",
        "jsonl",
    )
    assert res.returncode == 0, res.stderr
    events = [json.loads(line) for line in res.stdout.splitlines()]
    kinds = [e["event"] for e in events]
    assert kinds[0] == "progress" and kinds[-1] == "done"
    assert events[-1]["status"] == "ok"


def test_train_lists_every_model_with_its_size() -> None:
    from ipv2.models.registry import MODELS

    res = ipv2("train", "--list-models", "--events", "jsonl")
    assert res.returncode == 0, res.stderr
    rows = {row["name"]: row for row in json.loads(res.stdout.splitlines()[-1])["models"]}
    assert set(rows) == set(MODELS)
    assert rows["ffm"]["params_m"] == 39.52  # the paper's 39.5 M (Testing/test_models.py)
    assert rows["redcnn"]["defaults"] == dict(MODELS["redcnn"].defaults)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--size", "31"], "even number"),
        (["--slices", "0"], "slices"),
        (["--cases", "0"], "--cases"),
    ],
)
def test_phantom_bad_input_fails_cleanly_writing_nothing(
    tmp_path: Path, args: list[str], message: str
) -> None:
    res = ipv2("phantom", "--out", str(tmp_path / "p"), *args)
    assert res.returncode == 1
    assert message in res.stderr
    assert list(tmp_path.iterdir()) == []


def test_phantom_refuses_an_existing_folder_with_content(tmp_path: Path) -> None:
    (tmp_path / "p").mkdir()
    keep = tmp_path / "p" / "mine.txt"
    keep.write_text("precious")
    res = ipv2("phantom", "--out", str(tmp_path / "p"), "--size", "32", "--slices", "1")
    assert res.returncode == 1 and "already exists" in res.stderr
    assert keep.read_text() == "precious"
    assert sorted(p.name for p in (tmp_path / "p").iterdir()) == ["mine.txt"]


def test_errors_in_jsonl_mode_are_events(tmp_path: Path) -> None:
    res = ipv2("phantom", "--out", str(tmp_path / "p"), "--size", "31", "--events", "jsonl")
    assert res.returncode == 1
    last = json.loads(res.stdout.splitlines()[-1])
    assert last["event"] == "error" and "even number" in last["message"]


COMPUTE_COMMANDS = ("phantom", "simulate", "purify", "build-dataset", "denoise", "evaluate", "demo")


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    from ipv2.cli import build_parser

    action = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_help_is_plain_text_without_restructuredtext_markup() -> None:
    """Descriptions are docstrings; ``--help`` must not show ``literal`` or :role:`x`."""
    for name, parser in _subparsers().items():
        text = parser.format_help()
        assert "``" not in text and ":func:`" not in text and ":mod:`" not in text, name
    purify = _subparsers()["purify"].format_help()
    assert "ipv2 purify: masks" in purify and "masks.<ext>" in purify  # the text itself stays


def test_readme_commands_show_the_real_defaults() -> None:
    """Every ``[--option NUMBER]`` in the README's command table is that option's default."""
    from ipv2.training.config import TrainConfig

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    parsers = _subparsers()
    checked = []
    for line in readme.splitlines():
        row = re.match(r"\| `ipv2 ([a-z-]+) ([^`]*)`", line)
        if row is None or row.group(1) not in parsers:
            continue
        command, options = row.group(1), row.group(2)
        parser = parsers[command]
        if command == "bench":  # 'bench TARGET [options]': the target's own parser
            targets = next(a for a in parser._actions if a.dest == "target")
            target = options.split()[0]
            if target not in targets.choices:
                continue
            parser, command = targets.choices[target], f"bench {target}"
        by_flag = {s: a for a in parser._actions for s in a.option_strings}
        for flag, value in re.findall(r"\[(--[a-zA-Z0-9-]+) ([0-9][0-9.e-]*)[\] ]", options):
            action = by_flag[flag]
            default = action.default
            stated = re.search(r"\(default:? ([0-9][0-9.e-]*)", action.help or "")
            if default is None and stated:  # resolved later; the help states it
                default = stated.group(1)
            if default is None and command == "train":  # train's defaults live in its config
                default = getattr(TrainConfig, action.dest)
            assert default is not None and float(default) == float(value), (command, flag, value)
            checked.append((command, flag))
    assert ("demo", "--steps") in checked and ("train", "--epochs") in checked


def test_every_compute_command_takes_threads_and_applies_it(tmp_path: Path) -> None:
    """``--threads`` sets torch and the slice pool; OpenCV stays single-threaded inside it."""
    parsers = _subparsers()
    for name in COMPUTE_COMMANDS:
        action = next(a for a in parsers[name]._actions if "--threads" in a.option_strings)
        assert action.default is None, name  # None: the cores available
    # The command's own run() (main() puts the settings back afterwards, checked below).
    probe = (
        "import sys, cv2, torch\n"
        "from ipv2.cli import build_parser\n"
        "from ipv2.cli.common import make_reporter\n"
        "from ipv2.core.thread_pool import available_cores, worker_count\n"
        "args = build_parser().parse_args(sys.argv[1:])\n"
        "status = args.run(args, make_reporter(args))\n"
        "print(status, torch.get_num_threads(), worker_count(), cv2.getNumThreads(), "
        "available_cores())\n"
    )
    phantom = ["phantom", "--size", "32", "--slices", "2", "--quiet"]

    def run(*extra: str) -> list[int]:
        out = subprocess.run(
            [sys.executable, "-c", probe, *phantom, *extra],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert out.returncode == 0, out.stderr
        return [int(v) for v in out.stdout.split()[-5:]]

    status, torch_threads, pool, opencv, cores = run("--threads", "1", "--out", str(tmp_path / "a"))
    assert (status, torch_threads, pool, opencv) == (0, 1, 1, 1)
    status, torch_threads, pool, opencv, cores = run("--out", str(tmp_path / "b"))
    assert status == 0 and torch_threads == pool == cores >= 1 and opencv == 1
    if hasattr(os, "sched_getaffinity"):
        assert cores <= len(os.sched_getaffinity(0))


def test_threads_end_with_the_command(tmp_path: Path) -> None:
    """main() run in-process (notebooks, Slicer self-tests) leaves no --threads behind."""
    probe = (
        "import sys, torch\n"
        "from ipv2.cli import main\n"
        "from ipv2.core.thread_pool import worker_count\n"
        "torch.set_num_threads(2)\n"
        "before = worker_count()\n"
        "status = main(sys.argv[1:])\n"
        "print(status, before, worker_count(), torch.get_num_threads())\n"
    )
    argv = ["phantom", "--size", "32", "--slices", "2", "--quiet", "--threads", "1"]
    out = subprocess.run(
        [sys.executable, "-c", probe, *argv, "--out", str(tmp_path / "a")],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "IPV2_THREADS": "3"},
    )
    assert out.returncode == 0, out.stderr
    status, before, after, torch_threads = (int(v) for v in out.stdout.split()[-4:])
    assert (status, before, after, torch_threads) == (0, 3, 3, 2)
