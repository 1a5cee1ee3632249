"""The per-user model store: models a user installed once and then picks by name.

A denoising model is a folder (``model.json`` + ``model.safetensors``, see
:mod:`ipv2.io.checkpoints`). The store is one folder of such folders in the user's data
directory (``$XDG_DATA_HOME/ipv2/models``, ``~/Library/Application Support/ipv2/models``,
``%LOCALAPPDATA%\\ipv2\\models``), or wherever ``IPV2_MODEL_STORE`` or ``--store`` says,
so the command line and the Slicer panel see the same models.

Installing copies only the two files that make a model, from a folder, a .zip of one or
an https download (:mod:`.downloads`, :mod:`.archives`), into a hidden ``.install-*``
folder inside the store; the copy must then load exactly as ``ipv2 denoise`` would load
it (its description read and bounded, the weights' size and SHA-256 checked against
``model.json``, the network rebuilt from plain tensors) before it is renamed into place.
So the store never holds a half-copied or unverified model, an interrupted install leaves
at most a hidden folder that listing ignores, and nothing is executed or unpickled on
the way. ``install.json`` beside the model records where it came from.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ipv2 import __version__
from ipv2.core.errors import InputError, IPv2Error, OutputExistsError
from ipv2.core.events import Reporter
from ipv2.core.json_files import read_json_object
from ipv2.io.archives import extract_zip, find_model_folder
from ipv2.io.atomic import write_json_atomic
from ipv2.io.downloads import check_url, download, file_sha256, normalise_sha256

ENV_VAR = "IPV2_MODEL_STORE"
# The names ipv2.io.checkpoints uses; repeated here so that listing the store needs no
# PyTorch (a Slicer panel lists models before its dependencies are installed).
MODEL_JSON = "model.json"
WEIGHTS_FILE = "model.safetensors"
MODEL_FORMAT = "ipv2-model"
INSTALL_RECORD = "install.json"
DOWNLOADS = ".downloads"
DEFAULT_MAX_BYTES = 4 * 2**30

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_RUN_PARTS = ("final", "best")


# ---------------------------------------------------------------------------- where


def user_data_dir(
    *,
    platform: str | None = None,
    environ: Mapping[str, str] | None = None,
    home: Path | None = None,
) -> Path:
    """This platform's folder for an application's per-user data, with ``ipv2`` appended."""
    plat = sys.platform if platform is None else platform
    env = os.environ if environ is None else environ
    root = Path.home() if home is None else home
    if plat.startswith("win"):
        base = env.get("LOCALAPPDATA") or str(root / "AppData" / "Local")
    elif plat == "darwin":
        base = str(root / "Library" / "Application Support")
    else:  # Linux and other Unix: the XDG base directory rule (relative values are ignored)
        xdg = env.get("XDG_DATA_HOME", "")
        base = xdg if os.path.isabs(xdg) else str(root / ".local" / "share")
    return Path(base) / "ipv2"


def resolve_store(
    store: str | os.PathLike[str] | None = None, *, environ: Mapping[str, str] | None = None
) -> Path:
    """The store folder: ``store`` if given, else ``$IPV2_MODEL_STORE``, else the default."""
    if store is not None and str(store):
        return Path(store).expanduser()
    env = os.environ if environ is None else environ
    if env.get(ENV_VAR):
        return Path(env[ENV_VAR]).expanduser()
    return user_data_dir(environ=env) / "models"


# ---------------------------------------------------------------------------- what


@dataclass(frozen=True)
class StoredModel:
    """One entry of the store; ``problem`` says why it cannot be used (else None)."""

    name: str
    path: Path
    meta: dict[str, Any] = field(default_factory=dict)
    size: int = 0
    install: dict[str, Any] = field(default_factory=dict)
    problem: str | None = None

    @property
    def arch(self) -> str:
        return str(self.meta.get("arch") or "?")

    @property
    def strategy(self) -> str:
        purification = self.meta.get("purification")
        value = purification.get("strategy") if isinstance(purification, dict) else None
        return str(value or "?")

    @property
    def role(self) -> str:
        return str(self.meta.get("role") or "denoiser")


def check_name(name: str) -> str:
    """``name`` if it names a folder directly inside the store, else :class:`InputError`."""
    if not _NAME.match(name) or name in (".", ".."):
        raise InputError(
            f"{name!r} is not a model name: use letters, digits, '.', '_' and '-' (no '/' or "
            "'..'), starting with a letter or digit"
        )
    return name


def default_name(source: str) -> str:
    """A store name from the source: folder or archive name, a run's name for its final/best."""
    if "://" in source:
        stem = source.rstrip("/").rsplit("/", 1)[-1].split("?")[0]
        stem = stem[:-4] if stem.lower().endswith(".zip") else stem
    else:
        path = Path(source).resolve()
        if path.is_file():
            path = path.parent if path.name in (MODEL_JSON, WEIGHTS_FILE) else path
        stem = path.stem if path.suffix.lower() == ".zip" else path.name
        if stem in _RUN_PARTS or stem.startswith("step-"):
            run = path.parent.parent if path.parent.name == "checkpoints" else path.parent
            stem = f"{run.name}-{stem}"
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip(".-_")[:100]
    return cleaned or "model"


def unique_name(store: Path, base: str) -> str:
    """``base``, or ``base-2``, ``base-3``... whichever is free in the store."""
    name, n = check_name(base), 2
    while (store / name).exists():
        name, n = f"{base}-{n}", n + 1
    return name


def read_model_json(folder: Path) -> dict[str, Any]:
    """``model.json`` read without PyTorch: a JSON object of the ipv2 model format.

    Enough to list and describe a model; loading it (:func:`verify_model_folder`) checks
    everything else.
    """
    if not (folder / MODEL_JSON).is_file():
        raise InputError(f"{folder} holds no {MODEL_JSON}; choose a folder with a trained model")
    meta = read_json_object(folder / MODEL_JSON, what="an ipv2 model description (model.json)")
    if meta.get("format") != MODEL_FORMAT:
        raise InputError(f"{folder / MODEL_JSON} is not an ipv2 model description")
    return meta


def _entry(folder: Path) -> StoredModel:
    size = sum(p.stat().st_size for p in folder.iterdir() if p.is_file())
    try:
        meta = read_model_json(folder)
    except InputError as exc:
        return StoredModel(folder.name, folder, size=size, problem=str(exc))
    install: dict[str, Any] = {}
    with contextlib.suppress(InputError, OSError):  # where it came from is a courtesy only
        install = read_json_object(folder / INSTALL_RECORD, what="an install record")
    return StoredModel(folder.name, folder, meta, size=size, install=install)


def list_models(store: Path) -> list[StoredModel]:
    """Every model folder in the store by name; hidden work folders are not models."""
    if not store.is_dir():
        return []
    return [
        _entry(p)
        for p in sorted(store.iterdir(), key=lambda p: p.name.lower())
        if not p.name.startswith(".") and p.is_dir() and not p.is_symlink()
    ]


def get_model(store: Path, name: str) -> StoredModel:
    """The installed model ``name`` (refusing names that would leave the store)."""
    folder = store / check_name(name)
    if folder.is_symlink() or not folder.is_dir():
        known = ", ".join(m.name for m in list_models(store)) or "none"
        raise InputError(f"no model named {name!r} in {store} (installed: {known})")
    return _entry(folder)


def find_model(spec: str | os.PathLike[str], *, store: Path | None = None) -> Path:
    """The model folder ``spec`` names: a path to a folder, else a name in the store.

    A path wins, so a folder named like an installed model is never shadowed; a bare
    name that is not a folder here is looked up in the store (``ipv2 models list``).
    """
    path = Path(spec).expanduser()
    if path.exists() or os.sep in str(spec) or (os.altsep and os.altsep in str(spec)):
        return path
    if not _NAME.match(str(spec)):
        return path
    store_folder = resolve_store(store)
    if (store_folder / str(spec)).is_dir():
        return get_model(store_folder, str(spec)).path
    known = ", ".join(m.name for m in list_models(store_folder)) or "none installed"
    raise InputError(
        f"{spec} is neither a model folder nor a model in the store {store_folder} "
        f"({known}); give a folder holding model.json, or install one with ipv2 models install"
    )


def remove_model(store: Path, name: str) -> Path:
    """Delete the installed model ``name``; anything but a model folder in the store is refused."""
    model = get_model(store, name)
    if not (model.path / MODEL_JSON).is_file():
        raise InputError(f"{model.path} holds no {MODEL_JSON}; it is not a model ipv2 installed")
    if model.path.resolve().parent != store.resolve():
        raise InputError(f"{model.path} is not inside the store {store}; not removed")
    aside = Path(tempfile.mkdtemp(prefix=f".{name}.removing-", dir=store))
    aside.rmdir()
    os.rename(model.path, aside)  # gone from listings at once, even if deleting is slow
    shutil.rmtree(aside, ignore_errors=True)
    return model.path


# ---------------------------------------------------------------------------- install


def verify_model_folder(folder: Path) -> dict[str, Any]:
    """Load the model as inference would (bounds, hashes, shapes); return its ``model.json``."""
    from ipv2.io.checkpoints import load_checkpoint

    return load_checkpoint(folder).meta


def install(
    source: str,
    *,
    store: Path,
    name: str | None = None,
    sha256: str | None = None,
    overwrite: bool = False,
    max_bytes: int = DEFAULT_MAX_BYTES,
    reporter: Reporter | None = None,
) -> StoredModel:
    """Install ``source`` (model folder, .zip of one, or https address) into ``store``.

    ``sha256`` is the expected hash of the downloaded or given .zip file (of
    ``model.safetensors`` for a folder). A name already taken is refused unless
    ``overwrite``, which replaces the old model in one rename once the new one is verified.
    """
    rep = reporter or Reporter()
    target = check_name(name or default_name(source))
    expected = normalise_sha256(sha256)
    if (store / target).exists() and not overwrite:
        raise OutputExistsError(
            f"a model named {target!r} is already installed in {store}; choose another "
            "--name, or --overwrite to replace it"
        )
    store.mkdir(parents=True, exist_ok=True)
    _sweep(store)
    record: dict[str, Any] = {"source": source, "engine_version": __version__}
    work = Path(tempfile.mkdtemp(prefix=".install-", dir=store))
    try:
        staged = work / "model"
        staged.mkdir()
        if "://" in source:
            archive = _download(source, store, expected=expected, max_bytes=max_bytes, rep=rep)
            try:
                record["sha256"] = _unpack(archive, work, staged, max_bytes=max_bytes)
            finally:
                archive.unlink(missing_ok=True)
        else:
            record["source"] = str(Path(source).resolve())
            record["sha256"] = _copy_local(Path(source), work, staged, (expected, max_bytes))
        rep.log(f"checking {target}: description, weights' size and SHA-256, network shapes")
        verify_model_folder(staged)
        record["installed"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        write_json_atomic(staged / INSTALL_RECORD, record)
        _move_into_place(staged, store / target, overwrite=overwrite)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return get_model(store, target)


_STALE_SECONDS = 24 * 3600
_WORK = re.compile(r"^\.(install-|.+\.old-|.+\.removing-)")


def _sweep(store: Path) -> None:
    """Tidy after a killed install or remove; never deletes a model that has no replacement.

    A model set aside by ``--overwrite`` whose replacement never arrived (killed between
    the two renames) is put back; other work folders go once they are a day old.
    """
    now = time.time()
    for entry in store.iterdir():
        if not _WORK.match(entry.name) or entry.is_symlink() or not entry.is_dir():
            continue
        with contextlib.suppress(OSError):
            age = now - entry.stat().st_mtime
            if ".old-" in entry.name:
                original = store / entry.name[1 : entry.name.index(".old-")]
                if not original.exists() and age > 60:
                    os.rename(entry, original)
                    continue
            if age > _STALE_SECONDS:
                shutil.rmtree(entry, ignore_errors=True)


def _download(
    url: str, store: Path, *, expected: str | None, max_bytes: int, rep: Reporter
) -> Path:
    """The finished download (resumable under ``.downloads/`` until it is complete)."""
    check_url(url)
    key = hashlib.sha256(url.encode()).hexdigest()[:24]
    part = store / DOWNLOADS / f"{key}.part"
    if part.exists():
        rep.log(f"resuming the download of {url} after {part.stat().st_size} bytes")

    def progress(done: int, total: int) -> None:
        rep.progress("download", done, total or done)

    download(url, part, max_bytes=max_bytes, sha256=expected, progress=progress)
    done = part.with_suffix(".zip")
    os.replace(part, done)
    return done


def _unpack(archive: Path, work: Path, staged: Path, *, max_bytes: int) -> str:
    """Unpack a model .zip into ``staged`` (its two model files); return the zip's SHA-256."""
    with open(archive, "rb") as fh:
        if fh.read(4) != b"PK\x03\x04":
            raise InputError(f"{archive.name} is not a .zip archive of a model folder")
    digest = file_sha256(archive)
    unpacked = work / "unpacked"
    unpacked.mkdir()
    extract_zip(archive, unpacked, max_bytes=max_bytes)
    _take_model_files(find_model_folder(unpacked, MODEL_JSON), staged, move=True)
    return digest


def _copy_local(source: Path, work: Path, staged: Path, checks: tuple[str | None, int]) -> str:
    """Stage a local folder or .zip; return the SHA-256 the user may compare with."""
    expected, max_bytes = checks
    if not source.exists():
        raise InputError(f"{source} does not exist; give a model folder, a .zip or an https URL")
    if source.is_file() and source.suffix.lower() == ".zip":
        _check_hash(source, expected)
        return _unpack(source, work, staged, max_bytes=max_bytes)
    from ipv2.io.checkpoints import checkpoint_dir

    folder = checkpoint_dir(source)  # a folder, its model.json or weights; names pickles
    _check_hash(folder / WEIGHTS_FILE, expected)
    _take_model_files(folder, staged, move=False)
    return file_sha256(staged / WEIGHTS_FILE)


def _check_hash(path: Path, expected: str | None) -> None:
    if expected is not None and path.is_file() and file_sha256(path) != expected:
        raise InputError(f"{path} does not match the expected SHA-256; nothing was installed")


def _take_model_files(folder: Path, staged: Path, *, move: bool) -> None:
    for name in (MODEL_JSON, WEIGHTS_FILE):
        src = folder / name
        if not src.is_file():
            raise InputError(
                f"{folder} lacks {name}; a model folder holds {MODEL_JSON} and {WEIGHTS_FILE}"
            )
        if move:
            os.replace(src, staged / name)
        else:
            shutil.copyfile(src, staged / name)


def _move_into_place(staged: Path, final: Path, *, overwrite: bool) -> None:
    """Rename the verified folder in; an old one of the same name is only set aside after."""
    if not final.exists():
        try:
            os.rename(staged, final)
        except OSError:
            if final.exists():  # another install won the race: do not replace it
                raise OutputExistsError(
                    f"{final} appeared while installing; not replaced"
                ) from None
            raise
        return
    if not overwrite:
        raise OutputExistsError(f"{final} already exists; not replaced")
    if final.is_symlink() or not (final / MODEL_JSON).is_file():
        raise IPv2Error(f"{final} is not an installed model; not replaced (remove it yourself)")
    aside = Path(tempfile.mkdtemp(prefix=f".{final.name}.old-", dir=final.parent))
    aside.rmdir()
    os.rename(final, aside)
    os.rename(staged, final)
    shutil.rmtree(aside, ignore_errors=True)
