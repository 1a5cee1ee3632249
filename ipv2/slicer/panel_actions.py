"""Every panel button reports its failure in one dialog, with the details, never on the console.

Slicer's ``slicer.util.tryWithErrorDisplay`` shows a dialog but then re-raises, so the
same error also lands on the Python console as a traceback, and anything raised before
it is entered (a failing dependency install) is not shown at all (Slicer v5.10.0
Base/Python/slicer/util.py). :func:`panel_action` wraps a widget method instead: the
dependency check, a busy cursor and the action run inside one ``try``; any exception
becomes :func:`failure_report`'s text and details (traceback, and a subprocess's output
when it carried one), passed to the widget's ``showError``. No Qt here, so the wrapper is
tested with plain objects.

A widget using it provides ``ensureDependencies() -> bool`` (False: the user declined),
``busy()`` (a context manager, e.g. the wait cursor) and ``showError(text, details)``.
"""

from __future__ import annotations

import functools
import inspect
import io
import traceback
from collections.abc import Callable
from typing import Any, TypeVar

from ipv2.core.errors import IPv2Error

F = TypeVar("F", bound=Callable[..., Any])


def process_output(exc: BaseException) -> str:
    """The output a failed subprocess left in its exception, as text ('' when none).

    ``slicer.util.logProcessOutput`` raises ``CalledProcessError(output=proc.stdout)``
    with the *pipe object* it already read to the end (Slicer v5.8.0 and v5.10.0
    Base/Python/slicer/util.py), whose ``str()`` is ``<_io.TextIOWrapper ...>``: such a
    stream is read if anything is left and never shown as its repr.
    """
    parts = []
    for name in ("output", "stderr"):
        value = getattr(exc, name, None)
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        elif isinstance(value, io.IOBase) or hasattr(value, "read"):
            try:
                value = value.read() if not getattr(value, "closed", False) else ""  # type: ignore[union-attr]
            except (OSError, ValueError):
                value = ""
        if isinstance(value, str) and value.strip() and value.strip() not in parts:
            parts.append(value.strip())
    return "\n".join(parts)


def failure_report(title: str, exc: BaseException) -> tuple[str, str]:
    """(message, details) for an error dialog: one readable line, then everything known."""
    reason = str(exc) if isinstance(exc, IPv2Error) else f"{type(exc).__name__}: {exc}"
    if not str(exc):
        reason = type(exc).__name__
    output = process_output(exc)
    details = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    if output:
        details = f"Process output:\n{output}\n\n{details}"
    return f"{title}\n\n{reason}", details


def _accepted(method: Callable[..., Any], args: tuple[Any, ...]) -> tuple[Any, ...]:
    """The signal arguments the method takes (PythonQt may pass e.g. clicked's bool)."""
    params = list(inspect.signature(method).parameters.values())[1:]  # without self
    if any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in params):
        return args
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return args[: len(positional)]


def panel_action(title: str, *, dependencies: bool = False, busy: bool = True) -> Callable[[F], F]:
    """Decorate a widget slot: dependencies first (optional), then the action, errors shown."""

    def wrap(method: F) -> F:
        @functools.wraps(method)
        def run(widget: Any, *args: Any, **kwargs: Any) -> Any:
            try:
                if dependencies and not widget.ensureDependencies():
                    return None
                if not busy:
                    return method(widget, *_accepted(method, args), **kwargs)
                with widget.busy():
                    return method(widget, *_accepted(method, args), **kwargs)
            except Exception as exc:
                widget.showError(*failure_report(title, exc))
                return None

        return run  # type: ignore[return-value]

    return wrap
