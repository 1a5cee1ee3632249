"""The per-user model store: installing from a folder, a .zip and a loopback HTTPS stand-in.

Everything is real: a tiny genuine model folder, zip files written with :mod:`zipfile`,
an HTTP server on 127.0.0.1 in a thread (with Range support and a first connection it
cuts short) and the ``ipv2 models`` command line in a subprocess.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import socket
import stat
import subprocess
import sys
import threading
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from factories import tiny_checkpoint
from module_checks import ui_widgets, used_ui_names

from ipv2.core.errors import InputError, OutputExistsError
from ipv2.inference.model_card import card_text, training_card
from ipv2.io import checkpoints, model_store
from ipv2.io.downloads import check_url, download

REPO = Path(__file__).resolve().parents[1]


def ipv2(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ipv2", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
    )


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real tiny model as training leaves it: <run>/final."""
    return tiny_checkpoint(tmp_path_factory.mktemp("runs") / "run7" / "final")


def zip_bytes(entries: dict[str, bytes], links: dict[str, str] | None = None) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
        for name, target in (links or {}).items():
            info = zipfile.ZipInfo(name)
            info.create_system = 3  # Unix, so the mode below is meaningful
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, target)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def model_zip(model_dir: Path) -> bytes:
    """The model folder zipped the usual way: one folder at the top of the archive."""
    return zip_bytes({f"ffm-v1/{p.name}": p.read_bytes() for p in model_dir.iterdir()})


def visible(store: Path) -> list[str]:
    """The store's entries as a listing shows them (hidden work folders excluded)."""
    return (
        sorted(p.name for p in store.iterdir() if not p.name.startswith("."))
        if store.exists()
        else []
    )


def leftovers(store: Path) -> list[str]:
    """Hidden work folders or downloads an install left behind."""
    if not store.exists():
        return []
    found = [p.name for p in store.iterdir() if p.name.startswith(".") and p.name != ".downloads"]
    downloads = store / ".downloads"
    return found + ([p.name for p in downloads.iterdir()] if downloads.exists() else [])


# ---------------------------------------------------------------------------- where


def test_store_folder_per_platform_and_overrides(tmp_path: Path) -> None:
    home = Path("/home/ann")
    linux = model_store.user_data_dir(platform="linux", environ={}, home=home)
    assert linux == home / ".local/share/ipv2"
    xdg = model_store.user_data_dir(
        platform="linux", environ={"XDG_DATA_HOME": "/data/ann"}, home=home
    )
    assert xdg == Path("/data/ann/ipv2")
    relative = model_store.user_data_dir(
        platform="linux", environ={"XDG_DATA_HOME": "rel"}, home=home
    )
    assert relative == linux  # the XDG rule: relative values are ignored
    mac = model_store.user_data_dir(platform="darwin", environ={}, home=home)
    assert mac == home / "Library/Application Support/ipv2"
    win = model_store.user_data_dir(
        platform="win32", environ={"LOCALAPPDATA": r"C:\Users\ann\AppData\Local"}, home=home
    )
    assert str(win).endswith("ipv2") and "AppData" in str(win)
    env = {model_store.ENV_VAR: str(tmp_path / "env")}
    assert model_store.resolve_store(environ=env) == tmp_path / "env"
    assert model_store.resolve_store(tmp_path / "opt", environ=env) == tmp_path / "opt"
    assert model_store.resolve_store(environ={"XDG_DATA_HOME": "/x"}) == Path("/x/ipv2/models")


def test_store_names_match_the_checkpoint_format() -> None:
    """The store reads model.json without PyTorch, so it repeats these names; they must agree."""
    assert model_store.MODEL_JSON == checkpoints.META
    assert model_store.WEIGHTS_FILE == checkpoints.WEIGHTS
    assert model_store.MODEL_FORMAT == checkpoints.FORMAT


# ---------------------------------------------------------------------------- folder and zip


def test_install_from_folder_copies_only_the_verified_model(
    model_dir: Path, tmp_path: Path
) -> None:
    store = tmp_path / "store"
    (model_dir.parent / "notes.txt").write_text("not part of the model")
    model = model_store.install(str(model_dir), store=store)
    assert model.name == "run7-final"  # a run's final/best is named after the run
    assert sorted(p.name for p in model.path.iterdir()) == [
        "install.json",
        "model.json",
        "model.safetensors",
    ]
    assert model.install["source"] == str(model_dir.resolve())
    assert model.arch == "ffm" and model.strategy == "ipv2" and model.problem is None
    checkpoints.load_checkpoint(model.path)  # loads exactly as ipv2 denoise would
    with pytest.raises(OutputExistsError, match="--overwrite"):
        model_store.install(str(model_dir), store=store)
    again = model_store.install(str(model_dir), store=store, overwrite=True)
    assert again.path == model.path and leftovers(store) == []


def test_damaged_or_pickled_folders_install_nothing(model_dir: Path, tmp_path: Path) -> None:
    store = tmp_path / "store"
    damaged = tmp_path / "damaged"
    shutil.copytree(model_dir, damaged)
    weights = damaged / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-10] + b"0123456789")  # same size, other bytes
    with pytest.raises(InputError, match="does not match the hash"):
        model_store.install(str(damaged), store=store)
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "model.pth").write_bytes(b"\x80\x04K\x01.")
    with pytest.raises(InputError, match="never"):
        model_store.install(str(pickled), store=store)
    with pytest.raises(InputError, match="SHA-256"):
        model_store.install(str(model_dir), store=store, sha256="0" * 64)
    assert visible(store) == [] and leftovers(store) == []


def test_install_from_zip(model_dir: Path, model_zip: bytes, tmp_path: Path) -> None:
    store = tmp_path / "store"
    archive = tmp_path / "ffm-v1.zip"
    archive.write_bytes(model_zip)
    model = model_store.install(
        str(archive), store=store, sha256=hashlib.sha256(model_zip).hexdigest()
    )
    assert model.name == "ffm-v1"
    assert model.install["sha256"] == hashlib.sha256(model_zip).hexdigest()
    flat = tmp_path / "flat.zip"  # the two files at the top of the archive also work
    flat.write_bytes(zip_bytes({p.name: p.read_bytes() for p in model_dir.iterdir()}))
    assert model_store.install(str(flat), store=store, name="flat").problem is None
    assert visible(store) == ["ffm-v1", "flat"] and leftovers(store) == []


@pytest.mark.parametrize(
    "bad",
    [
        {"ffm-v1/../../evil.txt": b"x"},
        {"/tmp/ipv2-evil.txt": b"x"},
        {"C:/evil.txt": b"x"},
        {"ffm-v1\\..\\..\\evil.txt": b"x"},
    ],
    ids=["dotdot", "absolute", "drive", "backslash-dotdot"],
)
def test_zip_with_path_traversal_is_refused(
    model_dir: Path, tmp_path: Path, bad: dict[str, bytes]
) -> None:
    store = tmp_path / "deep" / "store"
    entries = {f"ffm-v1/{p.name}": p.read_bytes() for p in model_dir.iterdir()}
    archive = tmp_path / "evil.zip"
    archive.write_bytes(zip_bytes({**entries, **bad}))
    with pytest.raises(InputError, match="refused archive entry"):
        model_store.install(str(archive), store=store)
    assert visible(store) == [] and leftovers(store) == []
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "deep/evil.txt").exists()


def test_zip_with_a_symlink_is_refused(model_dir: Path, tmp_path: Path) -> None:
    store = tmp_path / "store"
    entries = {f"ffm-v1/{p.name}": p.read_bytes() for p in model_dir.iterdir()}
    archive = tmp_path / "link.zip"
    archive.write_bytes(zip_bytes(entries, links={"ffm-v1/notes": "/etc/passwd"}))
    with pytest.raises(InputError, match="symbolic link"):
        model_store.install(str(archive), store=store)
    assert visible(store) == [] and leftovers(store) == []


def test_oversized_or_foreign_archives_are_refused(model_zip: bytes, tmp_path: Path) -> None:
    store = tmp_path / "store"
    archive = tmp_path / "m.zip"
    archive.write_bytes(model_zip)
    with pytest.raises(InputError, match="limit"):
        model_store.install(str(archive), store=store, max_bytes=50_000)
    other = tmp_path / "other.zip"
    other.write_bytes(zip_bytes({"readme.txt": b"no model here"}))
    with pytest.raises(InputError, match="no model folder"):
        model_store.install(str(other), store=store)
    assert visible(store) == [] and leftovers(store) == []


# ---------------------------------------------------------------------------- http


class _Handler(BaseHTTPRequestHandler):
    """Serves ``server.files``; honours ``Range: bytes=N-``; may cut one response short."""

    server: _FileServer

    def do_GET(self) -> None:
        body = self.server.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        wanted = self.headers.get("Range")
        self.server.ranges.append(wanted)
        start = 0
        match = re.fullmatch(r"bytes=(\d+)-", wanted or "")
        if match and self.server.honour_range:
            start = int(match.group(1))
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        cut = self.server.cut_after.pop(self.path, None)
        if cut is not None:  # announce everything, send part, hang up
            self.wfile.write(body[start : start + cut])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.wfile.write(body[start:])

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _FileServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.files: dict[str, bytes] = {}
        self.cut_after: dict[str, int] = {}
        self.ranges: list[str | None] = []
        self.honour_range = True

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{path}"


@pytest.fixture()
def server() -> Iterator[_FileServer]:
    srv = _FileServer()
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def test_http_install_with_right_and_wrong_sha256_via_cli(
    server: _FileServer, model_zip: bytes, tmp_path: Path
) -> None:
    store = tmp_path / "store"
    server.files["/models/ffm-v1.zip"] = model_zip
    url = server.url("/models/ffm-v1.zip")
    wrong = ipv2("models", "install", url, "--sha256", "ab" * 32, "--store", str(store))
    assert wrong.returncode == 1
    assert "does not match the expected SHA-256" in wrong.stderr
    assert visible(store) == [] and leftovers(store) == []  # nothing installed, partial gone
    right = ipv2(
        "models",
        "install",
        url,
        "--sha256",
        hashlib.sha256(model_zip).hexdigest().upper(),
        "--store",
        str(store),
        "--events",
        "jsonl",
    )
    assert right.returncode == 0, right.stderr
    events = [json.loads(line) for line in right.stdout.splitlines()]
    progress = [e for e in events if e["event"] == "progress" and e["stage"] == "download"]
    assert progress and progress[-1]["done"] == progress[-1]["total"] == len(model_zip)
    assert events[-1]["event"] == "done" and events[-1]["name"] == "ffm-v1"
    assert visible(store) == ["ffm-v1"] and leftovers(store) == []
    checkpoints.load_checkpoint(store / "ffm-v1")


def test_interrupted_download_resumes_with_a_range_request(
    server: _FileServer, model_zip: bytes, tmp_path: Path
) -> None:
    store = tmp_path / "store"
    server.files["/m.zip"] = model_zip
    server.cut_after["/m.zip"] = 50_000
    model = model_store.install(
        server.url("/m.zip"), store=store, sha256=hashlib.sha256(model_zip).hexdigest()
    )
    assert server.ranges == [None, "bytes=50000-"]  # the rest, not the whole file again
    assert model.name == "m" and leftovers(store) == []


def test_a_part_left_by_an_earlier_run_is_resumed(
    server: _FileServer, model_zip: bytes, tmp_path: Path
) -> None:
    server.files["/m.zip"] = model_zip
    server.cut_after["/m.zip"] = 70_000
    part = tmp_path / "dl" / "m.part"
    with pytest.raises(InputError, match="run the same install again to resume"):
        download(server.url("/m.zip"), part, max_bytes=2**30, attempts=1)
    assert part.stat().st_size == 70_000  # kept for the next run
    digest = hashlib.sha256(model_zip).hexdigest()
    download(server.url("/m.zip"), part, max_bytes=2**30, sha256=digest)
    assert part.read_bytes() == model_zip and server.ranges[-1] == "bytes=70000-"


def test_a_server_ignoring_ranges_is_downloaded_again_not_spliced(
    server: _FileServer, model_zip: bytes, tmp_path: Path
) -> None:
    server.files["/m.zip"] = model_zip
    server.cut_after["/m.zip"] = 30_000
    server.honour_range = False
    part = tmp_path / "m.part"
    download(server.url("/m.zip"), part, max_bytes=2**30)
    assert part.read_bytes() == model_zip


def test_download_limits_and_address_rules(
    server: _FileServer, model_zip: bytes, tmp_path: Path
) -> None:
    server.files["/m.zip"] = model_zip
    part = tmp_path / "m.part"
    with pytest.raises(InputError, match="limit"):
        download(server.url("/m.zip"), part, max_bytes=10_000)
    assert not part.exists()
    for url in ("http://example.org/m.zip", "ftp://127.0.0.1/m.zip", "file:///etc/passwd"):
        with pytest.raises(InputError, match="refused"):
            check_url(url)
    assert check_url("https://example.org/m.zip") and check_url("http://localhost:8/m.zip")
    missing = ipv2("models", "install", server.url("/none.zip"), "--store", str(tmp_path / "s"))
    assert missing.returncode == 1 and "HTTP 404" in missing.stderr


# ---------------------------------------------------------------------------- cli


def test_cli_list_show_remove(model_dir: Path, tmp_path: Path) -> None:
    store = tmp_path / "store"
    env = {model_store.ENV_VAR: str(store)}  # the variable works as --store does
    assert ipv2("models", "install", str(model_dir), "--name", "lung", env=env).returncode == 0
    listed = ipv2("models", "list", "--store", str(store))
    assert listed.returncode == 0, listed.stderr
    header, row = listed.stdout.splitlines()[1:3]
    assert header.split() == ["NAME", "ARCH", "STRATEGY", "ROLE", "SIZE"]
    assert row.split()[:4] == ["lung", "ffm", "ipv2", "denoiser"] and "KiB" in row
    shown = ipv2("models", "show", "lung", env=env)
    assert shown.returncode == 0, shown.stderr
    for text in (
        "Name:",
        "lung",
        "Installed from:",
        "ffm network, flow scheme",
        "modules 1 Remove Background, 2 Add Noise",
        "HU window:",
        "[-1024.0, 1024.0]",
        "10 network calls per slice",
        "Intended use:",
        "research use; not a medical device",
        "Licence:",
        "Validation:",
    ):
        assert text in shown.stdout, text
    outside = tmp_path / "precious"
    outside.mkdir()
    (outside / "model.json").write_text("{}")
    for name in ("../precious", str(outside)):
        refused = ipv2("models", "remove", name, "--store", str(store))
        assert refused.returncode == 1 and refused.stderr.startswith("error:"), name
    assert (outside / "model.json").exists()
    assert ipv2("models", "remove", "lung", "--store", str(store)).returncode == 0
    assert "no models installed" in ipv2("models", "list", "--store", str(store)).stdout
    assert visible(store) == []


def test_denoise_takes_an_installed_models_name(model_dir: Path, tmp_path: Path) -> None:
    """--model NAME finds the store's model; a folder path still wins; unknown names say so."""
    import numpy as np

    from ipv2.core.volume import Volume
    from ipv2.io.volumes import read_volume, write_volume

    store = tmp_path / "store"
    env = {model_store.ENV_VAR: str(store)}
    assert ipv2("models", "install", str(model_dir), "--name", "lung", env=env).returncode == 0
    rng = np.random.default_rng(0)
    write_volume(Volume(rng.normal(-600, 200, (2, 32, 32)).astype(np.float32)), tmp_path / "u.nrrd")
    by_name = ipv2("denoise", "--input", str(tmp_path / "u.nrrd"), "--model", "lung",
                   "--steps", "1", "--out", str(tmp_path / "a.nrrd"), env=env)  # fmt: skip
    assert by_name.returncode == 0, by_name.stderr
    by_path = ipv2("denoise", "--input", str(tmp_path / "u.nrrd"), "--model", str(model_dir),
                   "--steps", "1", "--out", str(tmp_path / "b.nrrd"), env=env)  # fmt: skip
    assert by_path.returncode == 0, by_path.stderr
    assert np.array_equal(
        read_volume(tmp_path / "a.nrrd").array, read_volume(tmp_path / "b.nrrd").array
    )
    unknown = ipv2("denoise", "--input", str(tmp_path / "u.nrrd"), "--model", "liver",
                   "--out", str(tmp_path / "c.nrrd"), env=env)  # fmt: skip
    assert unknown.returncode == 1
    assert "neither a model folder nor a model in the store" in unknown.stderr
    assert "(lung)" in unknown.stderr and not (tmp_path / "c.nrrd").exists()


# ---------------------------------------------------------------------------- card


def test_training_card_describes_the_data_without_paths() -> None:
    manifest = {
        "source": "/data/patients/Jane_Doe_pairs",
        "parameters": {"dose_fraction": 0.02},
        "cases": [{"split": s} for s in ("train", "train", "val", "test")],
    }
    card = training_card("/srv/sets/lung-ipv2", manifest, train_kinds=["ipv2-input"])
    assert card["trained_on"].startswith("dataset 'lung-ipv2'; 4 cases (train 2, val 1, test 1)")
    assert "dose fraction 0.02" in card["trained_on"] and "/data/patients" not in str(card)
    assert card["intended_use"] == "research use; not a medical device"
    meta = {**checkpoints.read_metadata(tiny_checkpoint_meta()), "card": card}
    meta["metrics"] = {"psnr": 31.234567}
    text = card_text(meta)
    assert "Trained on:" in text and "lung-ipv2" in text and "psnr 31.23" in text


def tiny_checkpoint_meta() -> Path:
    import tempfile

    return tiny_checkpoint(Path(tempfile.mkdtemp()) / "m")


# ---------------------------------------------------------------------------- slicer side


def test_panel_choices_install_and_train_handoff(model_dir: Path, tmp_path: Path) -> None:
    from ipv2.runtime.runs import RunFolder, TrainingRun
    from ipv2.slicer.denoise_logic import DenoiseLogicMixin
    from ipv2.slicer.model_picker import (
        CHOOSE_FOLDER,
        choice_index,
        install_trained,
        model_choices,
        parse_install_text,
    )
    from ipv2.slicer.train_logic import TrainLogicMixin

    store = tmp_path / "store"
    assert [c.label for c in model_choices(store)] == [CHOOSE_FOLDER]
    run = TrainingRun(RunFolder(model_dir.parent), pid=0)
    a = TrainLogicMixin().installTrainedModel(run, str(store))
    b = TrainLogicMixin().installTrainedModel(run, str(store))  # clicked twice: one entry
    assert a.name == b.name == "run7-final" and visible(store) == ["run7-final"]
    other = tmp_path / "elsewhere" / "run7" / "final"  # same name, another run: kept apart
    shutil.copytree(model_dir, other)
    c = install_trained(other, store)
    assert c.name == "run7-final-2"
    choices = model_choices(store)
    assert [ch.label for ch in choices] == [
        "run7-final (ffm, ipv2, denoiser)",
        "run7-final-2 (ffm, ipv2, denoiser)",
        CHOOSE_FOLDER,
    ]
    assert choice_index(choices, store / "run7-final-2") == 1
    assert choice_index(choices, model_dir) == 2  # a folder outside the store
    logic = DenoiseLogicMixin()
    card = logic.describeModel(str(store / "run7-final"))
    assert "Intended use:" in card and "HU window:" in card
    assert logic.describeModel(str(tmp_path)).startswith("Not a usable model")
    url = "https://example.org/m.zip"
    assert parse_install_text(f" {url} {'A' * 64} ") == (url, "A" * 64)
    assert parse_install_text(url) == (url, None)


def test_the_model_selector_helper_uses_only_widgets_of_the_ui() -> None:
    helper = REPO / "IPv2Denoise/IPv2DenoiseLib/model_selector.py"
    widgets = ui_widgets(REPO / "IPv2Denoise/Resources/UI/IPv2Denoise.ui")
    used = used_ui_names(helper)
    assert {"modelSelectorComboBox", "installModelButton", "modelPathLineEdit"} <= used
    assert used <= set(widgets)


def test_a_trained_model_carries_its_card_into_the_store(tmp_path: Path) -> None:
    """ipv2 train writes the card; installing keeps it; the store's description shows it."""
    from test_train import make_dataset

    from ipv2.cli.models_cmd import describe
    from ipv2.core.events import Reporter
    from ipv2.training import TrainConfig, train

    data = make_dataset(tmp_path / "lung-set", size=16, train_cases=1, slices=2)
    cfg = TrainConfig(
        data=str(data), output=str(tmp_path / "run"), model="redcnn",
        model_params={"width": 8}, epochs=1, batch_size=2, lr=1e-3, crop=16, val_limit=1,
        threads=1,
    )  # fmt: skip
    train(cfg, Reporter())
    model = model_store.install(str(tmp_path / "run" / "final"), store=tmp_path / "store")
    assert model.name == "run-final"
    card = model.meta["card"]
    assert card["trained_on"].startswith("dataset 'lung-set'")
    assert str(tmp_path) not in card["trained_on"]
    assert card["intended_use"] == "research use; not a medical device" and card["licence"]
    text = describe(model)
    assert "Trained on:" in text and "lung-set" in text
    assert "1 network call per slice" in text  # RED-CNN: one pass, no sampler
    assert "psnr" in text and "modules 1 Remove Background, 2 Add Noise, 3 Remove Noise" in text


def test_leftovers_of_a_killed_install_are_tidied(model_dir: Path, tmp_path: Path) -> None:
    """Old work folders go; a model set aside by --overwrite, never replaced, comes back."""
    store = tmp_path / "store"
    store.mkdir()
    old_work, fresh_work = store / ".install-old", store / ".install-fresh"
    old_work.mkdir()
    fresh_work.mkdir()  # another install may be running: kept
    aside = store / ".lung.old-abc"
    shutil.copytree(model_dir, aside)
    day_ago = os.stat(store).st_mtime - 2 * 24 * 3600
    for folder in (old_work, aside):
        os.utime(folder, (day_ago, day_ago))
    model_store.install(str(model_dir), store=store, name="other")
    assert not old_work.exists() and fresh_work.exists()
    assert visible(store) == ["lung", "other"]
    assert model_store.get_model(store, "lung").problem is None
