"""A reporter that also appends every event to ``<output>/events.jsonl``.

The file is the run's durable log: a Slicer panel re-attaching to a run, or a person
after the fact, reads the same events the live stream carried, across resumes.
"""

from __future__ import annotations

from pathlib import Path
from typing import IO, Any

from ipv2.core.events import JsonlReporter, Reporter


class TeeReporter(Reporter):
    """Forward to ``inner`` and append JSON lines to ``path``."""

    def __init__(self, inner: Reporter, path: Path) -> None:
        self.inner = inner
        self._fh: IO[str] = open(path, "a", encoding="utf-8")  # noqa: SIM115 (closed in close())
        self._file = JsonlReporter(self._fh)

    def emit(self, kind: str, **fields: Any) -> None:
        self._file.emit(kind, **fields)
        self.inner.emit(kind, **fields)

    def file_only(self, kind: str, **fields: Any) -> None:
        """Append an event to the log file without forwarding it (the caller reports it)."""
        if not self._fh.closed:
            self._file.emit(kind, **fields)

    def close(self) -> None:
        self.inner.close()
        if not self._fh.closed:
            self._fh.close()
