"""``ipv2 models``: list, install, remove and describe the models in the user's store."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ipv2.cli.common import add_events_option
from ipv2.core.errors import InputError
from ipv2.core.events import Reporter
from ipv2.inference.model_card import card_text
from ipv2.io import model_store
from ipv2.io.model_store import DEFAULT_MAX_BYTES, ENV_VAR, StoredModel


def register(sub: Any) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--store",
        type=Path,
        default=None,
        help=f"model store folder (default: ${ENV_VAR}, else {model_store.resolve_store()})",
    )
    p = sub.add_parser(
        "models",
        help="list, install, remove and describe installed models",
        description=(
            "Manage the per-user model store that ipv2 and the Slicer panel pick models "
            "from. An install is verified (weights' size and SHA-256 against model.json, the "
            "network rebuilt) before it appears; nothing is executed or unpickled."
        ),
    )
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)

    lister = actions.add_parser("list", parents=[common], help="installed models")
    lister.set_defaults(run=run_list)

    inst = actions.add_parser(
        "install",
        parents=[common],
        help="install a model folder, a .zip of one, or an https:// download",
        description=(
            "Install SOURCE: a model folder (model.json + model.safetensors), a .zip of one, "
            "or an https:// address of such a .zip (http:// only to this computer). A "
            "download that breaks off is resumed, in the same run or by running the same "
            "install again."
        ),
    )
    inst.add_argument("source", metavar="SOURCE", help="folder, .zip file or https:// URL")
    inst.add_argument(
        "--sha256",
        default=None,
        metavar="HEX",
        help="expected SHA-256 of the .zip (download or file), or of model.safetensors for a "
        "folder; a mismatch installs nothing",
    )
    inst.add_argument("--name", default=None, help="name in the store (default: from SOURCE)")
    inst.add_argument(
        "--overwrite", action="store_true", help="replace an installed model of the same name"
    )
    inst.add_argument(
        "--max-size",
        type=float,
        default=DEFAULT_MAX_BYTES / 2**20,
        metavar="MIB",
        help=f"refuse downloads and archives larger than this (default {DEFAULT_MAX_BYTES >> 20})",
    )
    add_events_option(inst)
    inst.set_defaults(run=run_install)

    rm = actions.add_parser("remove", parents=[common], help="delete an installed model")
    rm.add_argument("name", metavar="NAME")
    rm.set_defaults(run=run_remove)

    show = actions.add_parser("show", parents=[common], help="a model's card")
    show.add_argument("name", metavar="NAME")
    show.set_defaults(run=run_show)


def _size(n: int) -> str:
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n / 2**10:.0f} KiB"


def run_list(args: argparse.Namespace, rep: Reporter) -> int:
    store = model_store.resolve_store(args.store)
    models = model_store.list_models(store)
    if not models:
        print(f"no models installed in {store} (add one with: ipv2 models install SOURCE)")
        return 0
    rows = [("NAME", "ARCH", "STRATEGY", "ROLE", "SIZE")]
    for m in models:
        if m.problem:
            rows.append((m.name, "unusable:", m.problem, "", _size(m.size)))
        else:
            rows.append((m.name, m.arch, m.strategy, m.role, _size(m.size)))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    print(f"models in {store}:")
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)) + "  " + r[4])
    return 0


def run_install(args: argparse.Namespace, rep: Reporter) -> int:
    if args.max_size <= 0:
        raise InputError(f"--max-size must be positive, got {args.max_size}")
    store = model_store.resolve_store(args.store)
    model = model_store.install(
        args.source,
        store=store,
        name=args.name,
        sha256=args.sha256,
        overwrite=args.overwrite,
        max_bytes=int(args.max_size * 2**20),
        reporter=rep,
    )
    rep.log(f"installed {model.name} ({model.arch}, {_size(model.size)}) in {model.path}")
    rep.done(status="ok", name=model.name, path=str(model.path))
    return 0


def run_remove(args: argparse.Namespace, rep: Reporter) -> int:
    store = model_store.resolve_store(args.store)
    path = model_store.remove_model(store, args.name)
    print(f"removed {args.name} ({path})")
    return 0


def describe(model: StoredModel) -> str:
    """The card with the store's own facts (name, folder, origin) on top."""
    extra = [("Name", model.name), ("Folder", str(model.path))]
    source = model.install.get("source")
    if source:
        extra.append(("Installed from", f"{source} ({model.install.get('installed', '?')})"))
    return card_text(model.meta, extra=extra)


def run_show(args: argparse.Namespace, rep: Reporter) -> int:
    store = model_store.resolve_store(args.store)
    model = model_store.get_model(store, args.name)
    if model.problem:
        raise InputError(f"{model.path} is not a usable model: {model.problem}")
    print(describe(model))
    return 0
