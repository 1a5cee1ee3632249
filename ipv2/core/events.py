"""Progress and result events shared by the CLI, the Slicer panels and library callers.

Long work reports through a :class:`Reporter`. ``JsonlReporter`` writes one JSON object
per line on stdout (``--events jsonl``), which is what the Slicer panels read from a
child process; ``ConsoleReporter`` shows progress bars and log lines for people; the
``Reporter`` base class itself discards everything, for quiet library use.

Event kinds: ``progress`` (stage, done, total), ``log`` (level, message), ``metric``
(name, value, plus context such as step), ``checkpoint`` (path), ``done`` (status and
result fields), ``error`` (message).
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tqdm import tqdm


class Reporter:
    """Receives events; this base class ignores them (library default)."""

    def emit(self, kind: str, **fields: Any) -> None:
        """Deliver one event; subclasses override this one method."""

    def progress(self, stage: str, done: int, total: int, **extra: Any) -> None:
        self.emit("progress", stage=stage, done=done, total=total, **extra)

    def log(self, message: str, level: str = "info") -> None:
        self.emit("log", level=level, message=message)

    def metric(self, name: str, value: float, **extra: Any) -> None:
        self.emit("metric", name=name, value=float(value), **extra)

    def done(self, status: str = "ok", **extra: Any) -> None:
        self.emit("done", status=status, **extra)

    def error(self, message: str) -> None:
        self.emit("error", message=message)

    def close(self) -> None:
        """Finish any open progress display."""


def _json_default(obj: object) -> object:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    return str(obj)


class JsonlReporter(Reporter):
    """One JSON object per line, flushed at once so a reading parent sees it live.

    If the reader goes away (Slicer closed while a training it launched was left running
    detached), writing fails with a broken pipe; the reporter then falls silent instead of
    killing the work, which keeps its own ``events.jsonl`` for a later re-attach.
    """

    def __init__(self, stream: IO[str] | None = None) -> None:
        self.stream = stream if stream is not None else sys.stdout
        self.detached = False

    def emit(self, kind: str, **fields: Any) -> None:
        if self.detached:
            return
        record = {"event": kind, "time": round(time.time(), 3), **fields}
        try:
            self.stream.write(json.dumps(record, default=_json_default) + "\n")
            self.stream.flush()
        except (BrokenPipeError, ValueError):  # ValueError: the stream was closed
            self.detached = True


class ConsoleReporter(Reporter):
    """Progress, log lines and errors for people, on stderr.

    On a terminal, progress is a bar per stage, and a stage reported with
    ``parent=<open stage>`` (validation inside training) gets a second bar under it that
    vanishes when done, so the outer bar is not restarted. Text goes through the bars'
    writer, which lifts the bars, prints the line whole and redraws them.

    Anywhere else (a file, a pipe, ``tee``, a terminal of unknown width) bars would write
    carriage returns and redraws between the log lines; there progress is a plain line
    at the start of a stage, at every tenth of it and at its end.
    """

    def __init__(self, stream: IO[str] | None = None, quiet: bool = False) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.quiet = quiet
        self.bars = _is_terminal(self.stream)
        self._bar: tqdm[Any] | None = None
        self._stage: str | None = None
        self._inner: tqdm[Any] | None = None
        self._inner_stage: str | None = None
        self._finished: str | None = None  # last completed stage, to ignore repeats
        self._tenths: dict[str, int] = {}  # plain progress: last tenth printed per stage

    def emit(self, kind: str, **fields: Any) -> None:
        if kind == "progress":
            parent = fields.get("parent")
            self._progress(
                str(fields["stage"]),
                int(fields["done"]),
                int(fields["total"]),
                parent=None if parent is None else str(parent),
            )
        elif kind == "log" and not (self.quiet and fields.get("level") == "debug"):
            self._write(str(fields["message"]))
        elif kind == "error":
            self._write(f"error: {fields['message']}")
        elif kind == "metric" and not self.quiet:
            context = {k: v for k, v in fields.items() if k not in ("name", "value")}
            extra = " ".join(f"{k}={v}" for k, v in context.items())
            self._write(f"{fields['name']} = {fields['value']:.6g} {extra}".rstrip())

    def _progress(self, stage: str, done: int, total: int, parent: str | None = None) -> None:
        if self.quiet:
            return
        nested = parent is not None and parent == self._stage
        if not nested and stage == self._finished and done >= total:
            return
        if not self.bars:
            self._plain(stage, done, total, nested=nested)
            return
        if nested:
            self._inner_progress(stage, done, total)
            return
        if self._bar is None or stage != self._stage:
            from tqdm import tqdm  # imported on first use: Slicer may not have it yet

            self.close()
            self._bar = tqdm(total=total, desc=stage, file=self.stream, leave=True)
            self._stage = stage
        self._bar.total = total
        self._bar.update(done - self._bar.n)
        if done >= total:
            self.close()
            self._finished = stage

    def _inner_progress(self, stage: str, done: int, total: int) -> None:
        """A bar under the open one (validation inside training), removed when done."""
        if self._inner is None or stage != self._inner_stage or done < self._inner.n:
            from tqdm import tqdm

            self._close_inner()
            self._inner = tqdm(total=total, desc=stage, file=self.stream, leave=False)
            self._inner_stage = stage
        self._inner.total = total
        self._inner.update(done - self._inner.n)
        if done >= total:
            self._close_inner()

    def _plain(self, stage: str, done: int, total: int, *, nested: bool) -> None:
        """One line at a stage's start, at each further tenth, and at its end."""
        tenth = 10 * done // total if total > 0 else 10
        last = self._tenths.get(stage)
        if last is None or tenth > last or (done == 0 and last > 0):
            percent = round(100 * done / total) if total > 0 else 100
            print(f"{stage}: {done}/{total} ({percent}%)", file=self.stream, flush=True)
            self._tenths[stage] = tenth
        if done >= total:
            self._tenths.pop(stage, None)
            if not nested:
                self._finished = stage
                self._stage = None
        elif not nested:
            self._stage = stage

    def _write(self, text: str) -> None:
        bar = self._inner or self._bar
        if bar is not None:
            bar.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)

    def _close_inner(self) -> None:
        if self._inner is not None:
            self._inner.close()
            self._inner = None
            self._inner_stage = None

    def close(self) -> None:
        self._close_inner()
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        self._stage = None


def _is_terminal(stream: IO[str]) -> bool:
    """A terminal with a known width: where progress bars can redraw in place."""
    try:
        return stream.isatty() and os.get_terminal_size(stream.fileno()).columns > 0
    except (AttributeError, OSError, ValueError):
        return False
