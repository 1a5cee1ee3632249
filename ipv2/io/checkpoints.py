"""Checkpoints: ``model.safetensors`` + ``model.json`` in one folder, written atomically.

A checkpoint is a folder holding the weights (safetensors: plain tensors, nothing is ever
unpickled) and a JSON description that rebuilds the network and tells inference how to
use it: architecture and hyper-parameters, scheme and steps, HU window, purification
strategy and modules, data fingerprint, engine version, epoch/step, validation metrics,
and the SHA-256 and size of the weights file, so a truncated or swapped weights file is
refused rather than half-loaded. Training folders add ``train_state.safetensors`` +
``train_state.json`` (raw weights, optimizer, RNG states as uint8 tensors, counters) for
an exact ``--resume``.

Atomicity: every file is written into a hidden ``.<name>.partial-*`` folder beside the
target, flushed, and the folder is renamed into place, so a crash at any moment leaves
either the previous checkpoint or the new one, never a mixture. Replacing an existing
folder (``best``) renames the old one aside first; :func:`recover` undoes a crash
between the two renames.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

from ipv2 import __version__
from ipv2.core.errors import InputError
from ipv2.core.hu_window import HUWindow
from ipv2.core.json_files import read_json_object
from ipv2.models.common import Network
from ipv2.models.registry import ALIASES, build, checked_hparams, get_spec
from ipv2.schemes.base import Scheme
from ipv2.schemes.registry import make_scheme

FORMAT = "ipv2-model"
FORMAT_VERSION = 1
WEIGHTS = "model.safetensors"
META = "model.json"
STATE_TENSORS = "train_state.safetensors"
STATE_META = "train_state.json"

_PICKLE_SUFFIXES = (".pth", ".pt", ".ckpt", ".pkl", ".pickle", ".bin", ".tar")


@dataclass
class Loaded:
    """A network ready for inference plus everything needed to feed it correctly."""

    model: Network
    scheme: Scheme
    window: HUWindow
    meta: dict[str, Any]
    path: Path


@dataclass
class TrainState:
    """Everything beyond the weights that an exact resume needs."""

    tensors: dict[str, Tensor] = field(default_factory=dict)
    scalars: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------- writing


def model_metadata(
    model: Network,
    scheme: Scheme,
    window: HUWindow,
    *,
    strategy: str | None = None,
    modules: list[int] | None = None,
    data_fingerprint: str | None = None,
    epoch: int = 0,
    step: int = 0,
    metrics: Mapping[str, float] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The ``model.json`` body (the weights' hash is added when it is written)."""
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "engine_version": __version__,
        "arch": model.arch,
        "hparams": dict(model.hparams),
        "scheme": {"name": scheme.name, "params": scheme.params()},
        "window": window.to_json(),
        "purification": {"strategy": strategy, "modules": [int(m) for m in modules or []]},
        "data_fingerprint": data_fingerprint,
        "epoch": int(epoch),
        "step": int(step),
        "metrics": {k: float(v) for k, v in (metrics or {}).items()},
        **dict(extra or {}),
    }


def write_checkpoint(
    target: str | os.PathLike[str],
    weights: Mapping[str, Tensor],
    meta: Mapping[str, Any],
    *,
    state: TrainState | None = None,
) -> Path:
    """Write (or atomically replace) the checkpoint folder ``target``."""
    final = Path(target)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.partial-", dir=final.parent))
    try:
        body = dict(meta)
        body["weights"] = _save_tensors(tmp / WEIGHTS, weights)
        _write_json(tmp / META, body)
        if state is not None:
            scalars = dict(state.scalars)
            scalars["tensors"] = _save_tensors(tmp / STATE_TENSORS, state.tensors)
            _write_json(tmp / STATE_META, scalars)
        _fsync_dir(tmp)
        _swap_into_place(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def save_model(
    target: str | os.PathLike[str],
    model: Network,
    meta: Mapping[str, Any],
    *,
    state: TrainState | None = None,
) -> Path:
    """Write ``model``'s current weights with ``meta`` (see :func:`model_metadata`)."""
    return write_checkpoint(target, model.state_dict(), meta, state=state)


def _save_tensors(path: Path, tensors: Mapping[str, Tensor]) -> dict[str, Any]:
    plain = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    save_file(plain, str(path), metadata={"format": FORMAT})
    with open(path, "rb+") as fh:
        os.fsync(fh.fileno())
    return {"file": path.name, "sha256": _sha256(path), "bytes": path.stat().st_size}


def _write_json(path: Path, data: Any) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())


def _fsync_dir(path: Path) -> None:
    if hasattr(os, "O_DIRECTORY"):
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _swap_into_place(tmp: Path, final: Path) -> None:
    if not final.exists():
        os.replace(tmp, final)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{final.name}.old-", dir=final.parent))
    old.rmdir()
    os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)


def recover(folder: str | os.PathLike[str]) -> None:
    """Clean up after a crash: drop partial folders, restore a replaced one if needed."""
    parent = Path(folder)
    if not parent.is_dir():
        return
    for entry in parent.iterdir():
        name = entry.name
        if not name.startswith(".") or not entry.is_dir():
            continue
        if ".partial-" in name:
            shutil.rmtree(entry, ignore_errors=True)
        elif ".old-" in name:
            original = parent / name[1 : name.index(".old-")]
            if original.exists():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                os.replace(entry, original)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ---------------------------------------------------------------------------- reading


def checkpoint_dir(path: str | os.PathLike[str]) -> Path:
    """Resolve a folder, ``model.json`` or ``model.safetensors`` to the checkpoint folder."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"checkpoint {p} does not exist")
    if p.is_file():
        if p.suffix not in (".json", ".safetensors"):
            _refuse_pickle(p)
        if p.name not in (META, WEIGHTS) and p.suffix not in (".json", ".safetensors"):
            raise InputError(
                f"{p} is not an ipv2 checkpoint: give the folder holding {WEIGHTS} and {META}"
            )
        p = p.parent
    if not (p / META).is_file():
        pickles = [q.name for q in p.iterdir() if q.suffix in _PICKLE_SUFFIXES]
        hint = (
            f" (found {', '.join(pickles)}: pickled PyTorch files are never loaded)"
            if pickles
            else ""
        )
        raise InputError(
            f"{p} is not an ipv2 checkpoint: {META} is missing{hint}; train one with ipv2 train"
        )
    return p


def read_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """``model.json`` of a checkpoint, checked to be ours and of a version we read."""
    folder = checkpoint_dir(path)
    meta = read_json_object(folder / META, what="an ipv2 model description (model.json)")
    if meta.get("format") != FORMAT:
        raise InputError(
            f"{folder / META} is not an ipv2 model description (format is not {FORMAT!r})"
        )
    version = meta.get("format_version", 0)
    if not isinstance(version, int):
        raise InputError(f"{folder / META} has an invalid format_version {version!r}")
    if version > FORMAT_VERSION:
        raise InputError(
            f"{folder} was written by a newer ipv2 (format {meta['format_version']}, this engine "
            f"reads {FORMAT_VERSION}); update ipv2 to load it"
        )
    return meta


def load_checkpoint(
    path: str | os.PathLike[str],
    arch: str | None = None,
    device: str | torch.device = "cpu",
) -> Loaded:
    """Rebuild the network from ``model.json``, verify and load the weights.

    ``arch`` (optional) refuses a checkpoint of another architecture by name. The
    hyper-parameters pass the bounds of :mod:`ipv2.models.bounds` (types, ranges, a
    parameter count from a storage-free build) before the weights are read or a
    network is allocated, so a hostile ``model.json`` costs milliseconds, not memory.
    """
    folder = checkpoint_dir(path)
    meta = read_metadata(folder)
    name = str(meta.get("arch"))
    if arch is not None and ALIASES.get(name, name) != ALIASES.get(arch, arch):
        raise InputError(
            f"{folder} holds a {name!r} network, not {arch!r}; choose a checkpoint trained "
            f"for {arch!r} or drop the architecture choice"
        )
    get_spec(name)
    hparams = meta.get("hparams", {})
    if not isinstance(hparams, dict):
        raise InputError(f"{folder / META}: 'hparams' must be an object, got {hparams!r}")
    try:
        hparams = checked_hparams(name, hparams)
    except InputError as exc:
        raise InputError(f"{folder / META}: {exc}") from None
    scheme = _scheme(meta.get("scheme"), folder)
    weights = load_verified(folder, WEIGHTS, meta.get("weights"))
    try:
        model = build(name, **hparams)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{folder / META}: cannot rebuild the {name!r} network: {exc}") from None
    _check_shapes(model, weights, folder, name=name)
    model.load_state_dict(weights, strict=True)
    model.to(device).eval()
    window = HUWindow.from_json(meta.get("window"))
    return Loaded(model, scheme, window, meta=meta, path=folder)


def _scheme(info: Any, folder: Path) -> Scheme:
    """The sampler ``model.json`` names, its damage reported as one line naming the file."""
    info = info or {}
    params = info.get("params", {}) if isinstance(info, dict) else None
    if not isinstance(info, dict) or not isinstance(params, dict):
        raise InputError(
            f"{folder / META}: 'scheme' must be an object with a name and params, got {info!r}"
        )
    try:
        return make_scheme(str(info.get("name")), **params)
    except InputError as exc:
        raise InputError(f"{folder / META}: {exc}") from None
    except (TypeError, ValueError) as exc:
        raise InputError(f"{folder / META}: invalid scheme parameters {params!r}: {exc}") from None


def load_verified(folder: Path, filename: str, record: Any) -> dict[str, Tensor]:
    """Read a safetensors file after checking its size and hash against the JSON record."""
    path = folder / filename
    if not path.is_file():
        raise InputError(f"{path} is missing; the checkpoint is incomplete")
    if not isinstance(record, dict) or "sha256" not in record:
        raise InputError(
            f"{folder} does not record the hash of {filename}; it was not written by ipv2"
        )
    size = path.stat().st_size
    if _looks_pickled(path) and size != int(record.get("bytes", -1)):
        _refuse_pickle(path)
    if size != int(record.get("bytes", -1)):
        raise InputError(
            f"{path} is truncated or was replaced: {size} bytes, the checkpoint recorded "
            f"{record.get('bytes')}; use an intact copy"
        )
    if _sha256(path) != record["sha256"]:
        raise InputError(
            f"{path} does not match the hash recorded in its JSON; it was modified or damaged"
        )
    try:
        return load_file(str(path))
    except SafetensorError as exc:
        raise InputError(f"{path} is not a valid safetensors file ({exc})") from None


def _check_shapes(
    model: Network, weights: Mapping[str, Tensor], folder: Path, *, name: str
) -> None:
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in weights.items()}
    missing = sorted(set(expected) - set(got))
    unexpected = sorted(set(got) - set(expected))
    wrong = sorted(k for k in set(expected) & set(got) if expected[k] != got[k])
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        if wrong:
            k = wrong[0]
            parts.append(f"{len(wrong)} with other shapes (e.g. {k}: {got[k]} vs {expected[k]})")
        raise InputError(
            f"the weights in {folder} do not fit the {name!r} network its {META} describes: "
            + "; ".join(parts)
            + " — they belong to another architecture or configuration"
        )


def _looks_pickled(path: Path) -> bool:
    with open(path, "rb") as fh:
        head = fh.read(4)
    # Protocol-2+ pickles start with 0x80 and the protocol byte; torch.save's zip with "PK".
    return (head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05")) or head[
        :4
    ] == b"PK\x03\x04"


def _refuse_pickle(path: Path) -> None:
    if path.suffix in _PICKLE_SUFFIXES or _looks_pickled(path):
        raise InputError(
            f"{path} is a pickled PyTorch file (.pth/.pt); ipv2 never unpickles files because "
            "loading a pickle can run arbitrary code. Use an ipv2 checkpoint folder "
            f"({WEIGHTS} + {META}) written by ipv2 train"
        )


# ---------------------------------------------------------------------------- training state


def load_train_state(path: str | os.PathLike[str]) -> TrainState:
    """The resume state of a training checkpoint folder (verified like the weights)."""
    folder = Path(path)
    meta_path = folder / STATE_META
    if not meta_path.is_file():
        raise InputError(f"{folder} holds no training state ({STATE_META}); it cannot be resumed")
    scalars = read_json_object(meta_path, what="ipv2 training state (train_state.json)")
    tensors = load_verified(folder, STATE_TENSORS, scalars.pop("tensors", None))
    return TrainState(tensors, scalars)


def flatten(tree: Any, prefix: str, tensors: dict[str, Tensor]) -> Any:
    """Move every tensor of a nested structure into ``tensors``; return a JSON skeleton.

    Optimizer state dicts key their state by integer parameter index; those dicts are
    stored as ``{"__int_keys__": [[k, v], ...]}`` so they come back with int keys.
    """
    if isinstance(tree, Tensor):
        key = prefix
        tensors[key] = tree
        return {"__tensor__": key}
    if isinstance(tree, dict):
        if tree and all(isinstance(k, int) for k in tree):
            return {
                "__int_keys__": [[k, flatten(v, f"{prefix}.{k}", tensors)] for k, v in tree.items()]
            }
        return {str(k): flatten(v, f"{prefix}.{k}", tensors) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return [flatten(v, f"{prefix}.{i}", tensors) for i, v in enumerate(tree)]
    if tree is None or isinstance(tree, (bool, int, float, str)):
        return tree
    raise TypeError(f"cannot store {type(tree).__name__} at {prefix} without pickle")


def unflatten(skeleton: Any, tensors: Mapping[str, Tensor]) -> Any:
    """Inverse of :func:`flatten`."""
    if isinstance(skeleton, dict):
        if set(skeleton) == {"__tensor__"}:
            return tensors[skeleton["__tensor__"]]
        if set(skeleton) == {"__int_keys__"}:
            return {int(k): unflatten(v, tensors) for k, v in skeleton["__int_keys__"]}
        return {k: unflatten(v, tensors) for k, v in skeleton.items()}
    if isinstance(skeleton, list):
        return [unflatten(v, tensors) for v in skeleton]
    return skeleton
