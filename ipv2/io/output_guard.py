"""Outputs must not be inputs, nor each other: checked once, before a command does work.

``--overwrite`` lets a command replace *its own* earlier output; it must never let the
command replace what it reads (``ipv2 evaluate --pred P.nrrd --out P.nrrd --overwrite``
would turn the prediction into JSON) or let one output replace another of the same run
(``--out R --csv R`` would keep only the CSV). Paths are compared resolved (``./a``,
``d/../a`` and symlinks name the same file), and existing files are also compared by
identity (hard links, case-insensitive file systems). An input folder counts with every
existing file inside it; a new file inside an input folder is not an input.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from itertools import combinations
from pathlib import Path

from ipv2.core.errors import InputError, OutputExistsError

PathArg = str | os.PathLike[str] | None


def check_outputs_apart(*, outputs: Mapping[str, PathArg], inputs: Mapping[str, PathArg]) -> None:
    """Refuse an output that is, holds or lies among the inputs, or names another output.

    ``outputs`` and ``inputs`` map the option that gave a path (e.g. ``"--out"``,
    ``"--pred"``) to it; ``None`` (an option not given) is skipped. Raises
    :class:`OutputExistsError` when writing would replace or remove an input, and
    :class:`InputError` when two outputs name the same path.
    """
    outs = [(label, Path(p)) for label, p in outputs.items() if p is not None and str(p)]
    ins = [(label, Path(p)) for label, p in inputs.items() if p is not None and str(p)]
    for out_label, out in outs:
        for in_label, src in ins:
            problem = _conflict(out, src)
            if problem:
                raise OutputExistsError(
                    f"{out_label} {out} {problem} the {in_label} input {src}; writing it would "
                    "destroy an input, with or without --overwrite: choose another path"
                )
    for (label_a, a), (label_b, b) in combinations(outs, 2):
        if _same(a, b):
            how = f"name the same path ({a})"
        elif _inside(a, b) or _inside(b, a):
            how = f"overlap ({a} and {b}: one lies inside the other)"
        else:
            continue
        raise InputError(
            f"{label_a} and {label_b} {how}; one would replace the other: give each output "
            "its own name"
        )


def _conflict(out: Path, src: Path) -> str | None:
    """How writing ``out`` would touch input ``src``: a verb phrase, or None."""
    if _same(out, src):
        return "is"
    if _inside(out, src) and (out.exists() or out.is_symlink()):
        return "is a file inside"
    if _inside(src, out):
        return "is a folder holding"
    return None


def _resolved(path: Path) -> Path:
    return Path(os.path.realpath(path))


def _same(a: Path, b: Path) -> bool:
    if _resolved(a) == _resolved(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # one does not exist (yet)
        return False


def _inside(child: Path, folder: Path) -> bool:
    """True when ``child`` lies somewhere below ``folder`` (resolved)."""
    return _resolved(folder) in _resolved(child).parents
