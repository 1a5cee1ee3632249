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
    """Progress bars on stderr, one per stage; log lines and errors as plain text."""

    def __init__(self, stream: IO[str] | None = None, quiet: bool = False) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.quiet = quiet
        self._bar: tqdm[Any] | None = None
        self._stage: str | None = None
        self._finished: str | None = None  # last completed stage, to ignore repeats

    def emit(self, kind: str, **fields: Any) -> None:
        if kind == "progress":
            self._progress(str(fields["stage"]), int(fields["done"]), int(fields["total"]))
        elif kind == "log" and not (self.quiet and fields.get("level") == "debug"):
            self._write(str(fields["message"]))
        elif kind == "error":
            self._write(f"error: {fields['message']}")
        elif kind == "metric" and not self.quiet:
            context = {k: v for k, v in fields.items() if k not in ("name", "value")}
            extra = " ".join(f"{k}={v}" for k, v in context.items())
            self._write(f"{fields['name']} = {fields['value']:.6g} {extra}".rstrip())

    def _progress(self, stage: str, done: int, total: int) -> None:
        if self.quiet or (stage == self._finished and done >= total):
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

    def _write(self, text: str) -> None:
        if self._bar is not None:
            self._bar.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
            self._stage = None
