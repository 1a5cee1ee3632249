"""The paper's three IPv2 modules by name (method.md sections 3 to 5).

Code says ``Module.ADD_NOISE in recipe.modules``, never ``2 in ...``; people and the CLI
keep writing 1, 2, 3, which :func:`parse_modules` accepts (it also takes the names).
``Module`` is an ``IntEnum``, so manifests and reports written before it existed, which
store plain integers, still compare equal.
"""

from __future__ import annotations

from enum import IntEnum

from ipv2.core.errors import InputError


class Module(IntEnum):
    """One IPv2 module; the value is the paper's number."""

    REMOVE_BACKGROUND = 1  # the lung mask L replaces common(U, N): outside air is no target
    ADD_NOISE = 2  # the lungs of the training input are S = sim(N), matched low-dose noise
    REMOVE_NOISE = 3  # the lungs of the label are W = weak(U), the weak denoiser's output

    def __str__(self) -> str:  # "2" on every Python (3.10's IntEnum would say Module.ADD_NOISE)
        return str(self.value)

    @property
    def title(self) -> str:
        """The paper's name, e.g. "Remove Background"."""
        return self.name.replace("_", " ").title()


ALL_MODULES: frozenset[Module] = frozenset(Module)
_NONE = ("", "none", "0")


def as_module(value: int | str | Module) -> Module:
    """1, "1", "add-noise", "ADD_NOISE" or "Add Noise" -> ``Module.ADD_NOISE``."""
    if isinstance(value, Module):
        return value
    text = str(value).strip()
    try:
        return Module(int(text))
    except ValueError:
        pass
    key = text.upper().replace("-", "_").replace(" ", "_")
    if key in Module.__members__:
        return Module[key]
    names = ", ".join(f"{m.value} ({m.title})" for m in Module)
    raise InputError(f"unknown IPv2 module {value!r}; use {names}")


def modules_from(values: object) -> frozenset[Module]:
    """Any iterable of module numbers or names as a set of :class:`Module`."""
    if not isinstance(values, (set, frozenset, list, tuple)):
        raise InputError(f"modules must be a list of 1, 2, 3, got {values!r}")
    return frozenset(as_module(v) for v in values)


def parse_modules(text: str | None) -> frozenset[Module]:
    """``"1,2,3"`` -> all three; ``""``, ``"none"`` or ``"0"`` -> no module."""
    if text is None or text.strip().lower() in _NONE:
        return frozenset()
    return frozenset(as_module(p) for p in text.split(",") if p.strip())
