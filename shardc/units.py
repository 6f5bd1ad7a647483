"""How shardc writes counts for people: bytes (``1,008 B``, ``540.0 KiB``, ``1,006.5 GiB``) and FLOPs
(``1.13 TFLOP``)."""
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


def human_flops(n: float) -> str:
    """Decimal units, the largest that keeps the number at least 1: ``1.13 TFLOP``, ``152 GFLOP``."""
    for unit, scale in (("EFLOP", 1e18), ("PFLOP", 1e15), ("TFLOP", 1e12), ("GFLOP", 1e9), ("MFLOP", 1e6)):
        if n >= scale:
            return f"{n / scale:,.3g} {unit}" if n / scale < 1000 else f"{n / scale:,.0f} {unit}"
    return f"{n:,.0f} FLOP"


# The largest dim size, mesh axis size, repeat count or --set value shardc accepts: far beyond any real
# model (10^18 elements), small enough that every product and float conversion downstream is exact
# or finite, and refused with a message rather than a ValueError from int() (4,300 digits and up).
MAX_WHOLE = 10**18
_DIGITS = "0123456789"


def whole_number(text: str) -> int | None:
    """``text`` (ASCII digits only) as an int if it is at most :data:`MAX_WHOLE`; else None."""
    digits = text.lstrip("0")
    if not text or any(ch not in _DIGITS for ch in text) or len(digits) > len(str(MAX_WHOLE)):
        return None
    value = int(text)
    return value if value <= MAX_WHOLE else None


def human_seconds(s: float) -> str:
    """``812 ns``, ``45.3 µs``, ``28.4 ms``, ``1.82 s``, ``2.1 h``."""
    if s == 0:
        return "0 s"
    for unit, scale in (("ns", 1e-9), ("µs", 1e-6), ("ms", 1e-3)):
        if s < scale * 1000:
            return f"{s / scale:.3g} {unit}" if s / scale < 100 else f"{s / scale:.0f} {unit}"
    if s < 3600:
        return f"{s:.3g} s" if s < 100 else f"{s:.0f} s"
    return f"{s / 3600:,.1f} h"
