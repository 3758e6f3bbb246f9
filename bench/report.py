"""BENCHMARKS.md and the PNG plots."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

from .common import Machine, Section


def _cell(value: object) -> str:
    return str(value).replace("|", "\\|")


def _rel(path: Path, root: Path) -> str:
    """Link target relative to the report's folder, with forward slashes."""
    return Path(os.path.relpath(path, root)).as_posix()


def markdown_table(columns: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join(" --- " for _ in columns) + "|"]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def write_markdown(
    path: Path,
    machine: Machine,
    sections: Sequence[Section],
    *,
    command: str,
    minutes: float,
    images: Sequence[Path] = (),
) -> None:
    root = path.parent
    out = [
        "# Benchmarks",
        "",
        f"Written by `{command}` in {minutes:.1f} minutes. Rerun it to refresh every figure, plot and picture.",
        "",
        f"**Machine:** {machine.line()}.",
        "",
        "Times are medians over the stated number of runs; the machine is shared, so absolute times carry noise "
        "(the load average at the start is given above).",
        "",
    ]
    if images:
        out += ["## What it does", ""]
        out += [f"![{p.stem}]({_rel(p, root)})" for p in images]
        out.append("")
    for section in sections:
        out += [f"## {section.title}", "", f"*{section.setup}* Machine: as above.", ""]
        if section.rows:
            out += [markdown_table(section.columns, section.rows), ""]
        for note in section.notes:
            out.append(f"- {note}")
        if section.notes:
            out.append("")
        for plot in section.plots:
            out += [f"![{plot.stem}]({_rel(plot, root)})", ""]
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("\n".join(out).rstrip() + "\n", encoding="utf-8")
    tmp.replace(path)


# --- plots ----------------------------------------------------------------------------


def _pyplot():  # type: ignore[no-untyped-def]
    import matplotlib

    matplotlib.use("Agg")  # no display on a server
    import matplotlib.pyplot as plt

    return plt


def bar_groups(
    path: Path,
    groups: Sequence[str],
    series: dict[str, Sequence[float]],
    *,
    ylabel: str,
    title: str,
    log: bool = False,
) -> Path:
    """Grouped bar chart: one group per entry of ``groups``, one bar per series."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.0), dpi=110)
    n = max(len(series), 1)
    width = 0.8 / n
    for k, (name, values) in enumerate(series.items()):
        xs = [i + (k - (n - 1) / 2) * width for i in range(len(groups))]
        vals = [v if v is not None and not math.isnan(v) else 0.0 for v in values]
        bars = ax.bar(xs, vals, width=width, label=name)
        for bar, v in zip(bars, values):
            if v is None or math.isnan(v):
                continue
            ax.annotate(
                f"{v:.3g}",
                (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                ha="center",
                va="bottom",
                fontsize=7,
                xytext=(0, 1),
                textcoords="offset points",
            )
    ax.set_xticks(range(len(groups)), list(groups))
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    if log:
        ax.set_yscale("log")
        _plain_log_ticks(ax.yaxis)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


def horizontal_bars(path: Path, labels: Sequence[str], values: Sequence[float], *, xlabel: str, title: str) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 0.45 * len(labels) + 1.2), dpi=110)
    vals = [v if not math.isnan(v) else 0.0 for v in values]
    ax.barh(range(len(labels)), vals, color="#4C72B0")
    for i, v in enumerate(values):
        ax.annotate(
            "n/a" if math.isnan(v) else f"{v:.3g}",
            (vals[i], i),
            va="center",
            fontsize=7,
            xytext=(3, 0),
            textcoords="offset points",
        )
    ax.set_yticks(range(len(labels)), list(labels), fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(xlabel)
    ax.set_title(title, fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


def lines(path: Path, series: dict[str, Sequence[float | None]], *, xlabel: str, ylabel: str, title: str) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(10.0, 4.0), dpi=110)
    for name, values in series.items():
        xs = [i for i, v in enumerate(values) if v is not None]
        ax.plot(xs, [values[i] for i in xs], marker=".", label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_yscale("log")
    _plain_log_ticks(ax.yaxis)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


def _plain_log_ticks(axis) -> None:  # type: ignore[no-untyped-def]
    """Label a log axis 0.3, 1, 4 rather than 3x10^-1, 10^0, 4x10^0."""
    from matplotlib.ticker import FuncFormatter

    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    # Minor ticks: label only 2x and 5x each decade, so the labels never crowd.
    axis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}" if f"{v:.0e}"[0] in "25" else ""))


def _save(fig, path: Path) -> Path:  # type: ignore[no-untyped-def]
    plt = _pyplot()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)
    return path
