"""The figures of ``shardc sweep``: the paper's Figure 1 (cost against latency) and Figure 3 (the
communication of each feed-forward layout against tokens per batch), drawn with matplotlib's Agg
backend.  matplotlib is the optional ``plot`` extra; :func:`require_matplotlib` says how to install it.
"""
from __future__ import annotations

import importlib.util
import re
from collections import defaultdict
from pathlib import Path
from typing import Any, Sequence

from shardc.errors import ShardcError
from shardc.planner.sweep import LayoutPoint, SweepPoint, pareto

INSTALL_HINT = 'pip install -e ".[plot]" (in a checkout; or pip install "shardc[plot]")'
_PALM = re.compile(r"palm_(\d+)b", re.IGNORECASE)
_MODEL_COLOURS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown")
_LAYOUT_STYLE = {"1d-ws": ("tab:gray", "1D weight-stationary"), "2d-ws": ("tab:blue", "2D weight-stationary"),
                 "wg-x": ("tab:orange", "X weight-gathered"), "wg-xy": ("tab:green", "XY weight-gathered"),
                 "wg-xyz": ("tab:red", "XYZ weight-gathered")}


def require_matplotlib(flag: str) -> None:
    """A :class:`ShardcError` (exit 2) saying how to install matplotlib, if it is missing."""
    if importlib.util.find_spec("matplotlib") is None:
        raise ShardcError(f"{flag} needs matplotlib, which is not installed", hint=f"install it: {INSTALL_HINT}")


def _pyplot() -> Any:
    require_matplotlib("--plot")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def display_name(model: str) -> str:
    """``palm_540b_decode`` -> ``PaLM 540B``; other names lose a ``_decode``/``_prefill`` suffix."""
    m = _PALM.search(model)
    if m:
        return f"PaLM {m.group(1)}B"
    return re.sub(r"_(decode|prefill)$", "", model)


def _save(fig: Any, path: str) -> None:
    try:
        fig.savefig(Path(path), dpi=150, bbox_inches="tight")
    except OSError as err:
        raise ShardcError(f"cannot write {path}: {err.strerror or err}") from None


def plot_costs(points: Sequence[SweepPoint], path: str, chip: str = "tpu-v4") -> None:
    """Figure 1: cost per token against latency, log-log, one Pareto frontier per model and dtype."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9, 6.5))
    curves: dict[tuple[str, str], list[SweepPoint]] = defaultdict(list)
    for p in points:
        curves[(p.model, p.weights)].append(p)
    models = list(dict.fromkeys(p.model for p in points))
    phases = {p.phase for p in points}
    for (model, weights), pts in curves.items():
        colour = _MODEL_COLOURS[models.index(model) % len(_MODEL_COLOURS)]
        dashed = weights != "bf16"
        ok = [p for p in pts if p.feasible]
        ax.scatter([_ms(p.plot_latency_s) for p in ok], [p.cost_chip_ms_per_token for p in ok], s=6,
                   color=colour, alpha=0.25, marker="x" if dashed else "o", linewidths=0.6)
        front = pareto(pts)
        if not front:
            continue
        ax.plot([_ms(p.plot_latency_s) for p in front], [p.cost_chip_ms_per_token for p in front],
                linestyle="--" if dashed else "-", marker="s" if dashed else "o", markersize=4, color=colour,
                label=f"{display_name(model)} {weights}")
        for p in front:
            ax.annotate(f"{p.chips}/B={p.batch}", (_ms(p.plot_latency_s), p.cost_chip_ms_per_token or 0.0),
                        textcoords="offset points", xytext=(3, 3), fontsize=5.5, color=colour, alpha=0.85)
    ax.set_xscale("log")
    ax.set_yscale("log")
    if phases == {"decode"}:
        ax.set_xlabel("latency per generated token (ms): one decode step")
        what = "decode (the paper's Figure 1, left)"
    elif phases == {"prefill"}:
        ax.set_xlabel("time to process the input (ms): one prefill pass")
        what = "prefill (the paper's Figure 1, right)"
    else:
        ax.set_xlabel("latency (ms): per token for decode files, the whole pass for prefill files")
        what = "decode and prefill"
    ax.set_ylabel("cost (chip-ms per token)")
    ax.set_title(f"Cost against latency, {what}\nthe planner's best layout per chip count and batch on {chip}; "
                 "lines: Pareto frontiers, labels chips/batch", fontsize=10)
    ax.grid(True, which="both", linewidth=0.3, alpha=0.5)
    if curves:
        ax.legend(fontsize=8, title="model, weights", title_fontsize=8)
    _save(fig, path)
    plt.close(fig)


def plot_layouts(points: Sequence[LayoutPoint], path: str, what: str = "", chip: str = "tpu-v4") -> None:
    """Figure 3: each feed-forward layout's communication time of one run against tokens per batch."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 5.5))
    by_ffn: dict[str, list[LayoutPoint]] = defaultdict(list)
    for p in points:
        if p.feasible:
            by_ffn[p.ffn].append(p)
    for ffn, pts in by_ffn.items():
        colour, label = _LAYOUT_STYLE.get(ffn, ("black", ffn))
        pts = sorted(pts, key=lambda p: p.tokens)
        ax.plot([p.tokens for p in pts], [_ms(p.comm_s) for p in pts], marker="o", markersize=3.5,
                color=colour, linestyle=":" if ffn == "1d-ws" else "-", label=f"{label} ({ffn})")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("tokens per batch (B·L)")
    ax.set_ylabel("communication time of one run (ms)")
    mesh = points[0].mesh if points else ""
    ax.set_title(f"Feed-forward layouts: communication against tokens per batch (the paper's Figure 3)\n"
                 f"mesh {mesh}{', ' + what if what else ''}; {chip}", fontsize=10)
    ax.grid(True, which="both", linewidth=0.3, alpha=0.5)
    if by_ffn:
        ax.legend(fontsize=8)
    _save(fig, path)
    plt.close(fig)


def _ms(seconds: float | None) -> float:
    return (seconds or 0.0) * 1e3


__all__ = ["INSTALL_HINT", "display_name", "plot_costs", "plot_layouts", "require_matplotlib"]
