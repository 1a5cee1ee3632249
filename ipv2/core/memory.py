"""How much memory this process can still take, so oversized inputs are refused up front.

A reader asked to allocate what a hostile header declares may fail with a MemoryError, an
exception from C++ or, under an address-space limit, a segmentation fault that ends the
process; so the engine compares declared sizes with what is available *before*
allocating, and this module says what is available. The figure is the smallest of:

- available physical memory (Linux ``MemAvailable``; else ``sysconf``; Windows
  ``GlobalMemoryStatusEx``; else physical memory as the best bound left),
- the room left under a container's cgroup memory limit (v2 or v1),
- the room left under ``RLIMIT_AS`` (``ulimit -v``).

Every source is optional: a platform without one simply lacks that bound, and ``None``
means none could be read.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

_UNLIMITED = 1 << 60  # cgroup and rlimit values this large mean "no limit"


def available_memory_bytes() -> int | None:
    """The smallest of the bounds above, in bytes; None when none can be read."""
    bounds = [b for b in (_physical_available(), _cgroup_room(), _address_space_room()) if b]
    return min(bounds) if bounds else None


def _physical_available() -> int | None:
    meminfo = _proc_fields("/proc/meminfo")
    if "MemAvailable" in meminfo:
        return meminfo["MemAvailable"]
    if sys.platform == "win32":
        return _windows_available()
    for pages in ("SC_AVPHYS_PAGES", "SC_PHYS_PAGES"):
        try:
            return int(os.sysconf(pages)) * int(os.sysconf("SC_PAGE_SIZE"))
        except (AttributeError, ValueError, OSError):
            continue
    return None


def _proc_fields(path: str) -> dict[str, int]:
    """``Name:   123 kB`` lines (``/proc/meminfo``, ``/proc/self/status``) in bytes."""
    out: dict[str, int] = {}
    try:
        text = Path(path).read_text(encoding="ascii", errors="replace")
    except OSError:
        return out
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            scale = 1024 if parts[1:2] == ["kB"] else 1
            out[name.strip()] = int(parts[0]) * scale
    return out


def _windows_available() -> int | None:
    import ctypes

    class MemoryStatus(ctypes.Structure):
        _fields_ = [  # ctypes reads the layout from this class attribute
            ("dwLength", ctypes.c_ulong),
            ("dwMemoryLoad", ctypes.c_ulong),
            ("ullTotalPhys", ctypes.c_ulonglong),
            ("ullAvailPhys", ctypes.c_ulonglong),
            ("ullTotalPageFile", ctypes.c_ulonglong),
            ("ullAvailPageFile", ctypes.c_ulonglong),
            ("ullTotalVirtual", ctypes.c_ulonglong),
            ("ullAvailVirtual", ctypes.c_ulonglong),
            ("ullAvailExtendedVirtual", ctypes.c_ulonglong),
        ]

    status = MemoryStatus()
    status.dwLength = ctypes.sizeof(MemoryStatus)
    try:
        if ctypes.windll.kernel32.GlobalMemoryStatusEx(ctypes.byref(status)):  # type: ignore[attr-defined]
            return int(status.ullAvailPhys)
    except (AttributeError, OSError):
        pass
    return None


def _cgroup_room() -> int | None:
    """Limit minus usage of this process's memory cgroup (containers, systemd slices)."""
    try:
        lines = Path("/proc/self/cgroup").read_text(encoding="ascii").splitlines()
    except OSError:
        return None
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hierarchy, controllers, path = parts
        rel = path.strip().lstrip("/")
        if hierarchy == "0" and controllers == "":
            files = ("memory.max", "memory.current")
            roots = [Path("/sys/fs/cgroup") / rel, Path("/sys/fs/cgroup")]
        elif "memory" in controllers.split(","):
            files = ("memory.limit_in_bytes", "memory.usage_in_bytes")
            roots = [Path("/sys/fs/cgroup/memory") / rel, Path("/sys/fs/cgroup/memory")]
        else:
            continue
        for root in roots:
            limit, usage = (_read_int(root / name) for name in files)
            if limit is not None and limit < _UNLIMITED:
                return max(limit - (usage or 0), 0)
    return None


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text(encoding="ascii").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None  # "max" (cgroup v2) means no limit


def _address_space_room() -> int | None:
    """Room left under ``ulimit -v``: the soft limit minus the address space in use."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft == resource.RLIM_INFINITY or soft <= 0 or soft >= _UNLIMITED:
        return None
    used = _proc_fields("/proc/self/status").get("VmSize", 0)
    return max(soft - used, 0)


def format_bytes(count: float) -> str:
    """``1536`` -> ``"1.5 KiB"``: sizes in messages, binary units as ``ls -h`` shows them."""
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(value) < 1024 or unit == "PiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.3g} {unit}"
        value /= 1024
    return f"{value:.3g} PiB"  # unreachable; keeps type checkers content
