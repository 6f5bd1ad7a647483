"""How shardc writes byte counts for people: ``1,008 B``, ``540.0 KiB``, ``1,006.5 GiB``."""
from __future__ import annotations

_UNITS = ("KiB", "MiB", "GiB", "TiB", "PiB", "EiB")


def human_bytes(n: float) -> str:
    """Binary units, the largest that keeps the number at least 1 (bytes below 1 KiB)."""
    if n < 1024:
        return f"{n:,.0f} B"
    for unit in _UNITS:
        n /= 1024
        if n < 1024 or unit == _UNITS[-1]:
            break
    return f"{n:,.1f} {unit}"
