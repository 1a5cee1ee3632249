"""Point the paths written inside a published folder at its final name.

A command that builds a folder atomically (:func:`ipv2.io.atomic.atomic_output_dir`)
works in ``.<name>.partial-XXXX`` and renames it at the end, but what it wrote inside
(training configs, a student's teacher, dataset manifests, event logs) names the
temporary folder: after the rename those paths lead nowhere, and a ``--resume`` command
copied from them fails. :func:`repoint_paths` rewrites them once the folder is final.
Binary files (arrays, weights, images) never hold such paths and are not touched.
"""

from __future__ import annotations

import json
from pathlib import Path

from ipv2.io.atomic import atomic_file

TEXT_SUFFIXES = frozenset({".json", ".jsonl", ".csv", ".md", ".html", ".txt"})


def repoint_paths(folder: Path, old: Path, new: Path) -> list[Path]:
    """Replace the prefix ``old`` by ``new`` in the text files under ``folder``; the files
    changed. JSON files get the JSON-escaped form too (Windows backslashes)."""
    pairs = [(str(old), str(new))]
    escaped = (json.dumps(str(old))[1:-1], json.dumps(str(new))[1:-1])
    if escaped != pairs[0]:
        pairs.append(escaped)
    return replace_in_text_files(folder, pairs)


def replace_in_text_files(folder: Path, pairs: list[tuple[str, str]]) -> list[Path]:
    """Apply the ``(before, after)`` replacements to every text file under ``folder``
    (each file rewritten atomically, only if it changes); the files changed."""
    changed = []
    for path in sorted(folder.rglob("*")):
        if not path.is_file() or path.suffix not in TEXT_SUFFIXES:
            continue
        text = path.read_text(encoding="utf-8")
        updated = text
        for before, after in pairs:
            updated = updated.replace(before, after)
        if updated != text:
            with atomic_file(path, suffix=path.suffix) as tmp:
                tmp.write_text(updated, encoding="utf-8")
            changed.append(path)
    return changed
