"""The panels' view of the model store: choices for a selector, installing, describing.

IPv2Denoise's model selector lists the installed models plus "Choose folder..." (any
model folder on disk); its "Install model..." button and IPv2Train's "Use in
IPv2Denoise" put models into the same per-user store the command line uses
(:mod:`ipv2.io.model_store`). No Qt here: the module passes a progress callback and
shows the results. Listing and describing need no PyTorch, so the selector fills before
the panel's dependencies are installed.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ipv2.core.events import Reporter
from ipv2.inference.model_card import card_text
from ipv2.io import model_store
from ipv2.io.model_store import StoredModel

CHOOSE_FOLDER = "Choose folder..."
Progress = Callable[[int, int], None]  # (bytes so far, total bytes)


@dataclass(frozen=True)
class ModelChoice:
    """One selector entry; ``path`` is empty for "Choose folder..."."""

    label: str
    path: str = ""


def model_choices(store: str | os.PathLike[str] | None = None) -> list[ModelChoice]:
    """The store's usable models, by name, then "Choose folder..."."""
    models = model_store.list_models(model_store.resolve_store(store))
    entries = [
        ModelChoice(f"{m.name} ({m.arch}, {m.strategy}, {m.role})", str(m.path))
        for m in models
        if m.problem is None
    ]
    return [*entries, ModelChoice(CHOOSE_FOLDER)]


def choice_index(choices: list[ModelChoice], path: Any) -> int:
    """The entry showing ``path``, else "Choose folder..." (a folder outside the store)."""
    text = str(path or "")
    for i, choice in enumerate(choices):
        if choice.path and text and _same(choice.path, text):
            return i
    return len(choices) - 1


def _same(a: str, b: str) -> bool:
    try:
        return Path(a).resolve() == Path(b).resolve()
    except OSError:
        return a == b


def describe_model(path: Any) -> str:
    """The model card of a model folder, for the panel's info label."""
    text = str(path or "")
    if not text:
        return "No model selected."
    folder = Path(text)
    folder = folder.parent if folder.is_file() else folder
    return card_text(model_store.read_model_json(folder))


_HEX64 = re.compile(r"^[0-9A-Fa-f]{64}$")


def parse_install_text(text: str) -> tuple[str, str | None]:
    """``"https://... [SHA256]"`` as typed in the panel -> (address, expected hash or None)."""
    words = text.split()
    if len(words) == 2 and _HEX64.match(words[1]):
        return words[0], words[1]
    return text.strip(), None


class _CallbackReporter(Reporter):
    """Hands download progress to the panel's callback (which may raise to cancel)."""

    def __init__(self, progress: Progress | None) -> None:
        self.callback = progress

    def emit(self, kind: str, **fields: Any) -> None:
        if kind == "progress" and self.callback is not None:
            self.callback(int(fields["done"]), int(fields["total"]))


def install_model(
    source: str,
    *,
    sha256: str | None = None,
    store: str | os.PathLike[str] | None = None,
    progress: Progress | None = None,
) -> StoredModel:
    """Install a folder, .zip or https address into the store under a free name.

    A progress callback that raises (the panel's Cancel) stops a download and keeps the
    part already received, so installing the same address again resumes it.
    """
    root = model_store.resolve_store(store)
    name = model_store.unique_name(root, model_store.default_name(source))
    return model_store.install(
        source, store=root, name=name, sha256=sha256, reporter=_CallbackReporter(progress)
    )


def install_trained(
    folder: str | os.PathLike[str], store: str | os.PathLike[str] | None = None
) -> StoredModel:
    """Install a training run's model, replacing an earlier install of the same folder.

    Clicking "Use in IPv2Denoise" again after training longer updates that entry; a model
    of the same name from elsewhere is kept and this one gets a numbered name.
    """
    root = model_store.resolve_store(store)
    source = str(Path(folder).resolve())
    base = model_store.default_name(source)
    for model in model_store.list_models(root):
        if model.install.get("source") == source and re.fullmatch(
            rf"{re.escape(base)}(-\d+)?", model.name
        ):
            return model_store.install(source, store=root, name=model.name, overwrite=True)
    return model_store.install(source, store=root, name=model_store.unique_name(root, base))
