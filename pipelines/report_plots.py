"""The report's figures as inline SVG (matplotlib, Agg backend, no pyplot state).

Each function takes plain numbers and labels and returns one ``<svg>...</svg>`` element ready to be placed in
the HTML page as is (no XML prolog, no external references, text kept as text). Usage::

    svg = forest_svg([ForestRow("task_success", 0.08, 0.02, 0.14, reference=0.01,
                                reference_label="min improvement")], salt="exec-1/forest")

``salt`` seeds matplotlib's SVG ids, so several figures on one page do not share ids and the output is
reproducible. matplotlib is imported inside :func:`_new_figure`: importing it costs a few hundred ms.
"""

from __future__ import annotations

import io
import math
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

__all__ = [
    "ClusterBar",
    "ForestRow",
    "Interval",
    "TrafficMarker",
    "cluster_bars_svg",
    "forest_svg",
    "metric_intervals_svg",
    "traffic_svg",
]

# Colour-blind safe (Okabe-Ito) colours, so champion/challenger and good/bad read the same for everyone.
_BLUE = "#0072B2"
_ORANGE = "#E69F00"
_GREEN = "#009E73"
_RED = "#D55E00"
_GREY = "#777777"
_VARIANT_COLOURS = (_BLUE, _ORANGE, _GREEN, "#CC79A7", "#56B4E9")
_WIDTH_IN = 7.5
_METADATA = re.compile(r"\s*<metadata>.*?</metadata>", re.DOTALL)


@dataclass(frozen=True)
class Interval:
    """A point estimate with its confidence interval, for one variant of one metric."""

    label: str
    estimate: float
    low: float
    high: float


@dataclass(frozen=True)
class ForestRow:
    """One paired difference (challenger - champion) and the threshold it is judged against."""

    label: str
    estimate: float
    low: float
    high: float
    reference: float
    reference_label: str


@dataclass(frozen=True)
class ClusterBar:
    """Mean per-case difference of one cluster."""

    cluster: str
    mean_difference: float
    n_cases: int


@dataclass(frozen=True)
class TrafficMarker:
    """A moment on the traffic timeline worth pointing at: a guard trip or the rollback."""

    seconds: float
    share_percent: float
    kind: Literal["trip", "rollback"]


def _new_figure(height_in: float, rows: int = 1, cols: int = 1) -> tuple[Figure, list[Axes]]:
    import matplotlib

    if "matplotlib.pyplot" not in sys.modules:  # never switch the backend under a caller using pyplot
        matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(_WIDTH_IN, height_in), layout="constrained")
    grid = fig.subplots(rows, cols, squeeze=False)
    return fig, [ax for row in grid for ax in row]


def _to_svg(fig: Figure, salt: str) -> str:
    import matplotlib

    # Text stays text (smaller, searchable); a `$` in a cluster name must not turn into mathtext.
    buffer = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": salt, "text.parse_math": False}):
        fig.savefig(buffer, format="svg", metadata={"Date": None, "Creator": None})
    text = buffer.getvalue()
    # The prolog cannot sit inside HTML; the RDF metadata block only names vocabularies.
    return _METADATA.sub("", text[text.index("<svg") :], count=1)


def _finite(*values: float) -> bool:
    return all(math.isfinite(v) for v in values)


def metric_intervals_svg(metrics: Mapping[str, Sequence[Interval]], *, salt: str) -> str:
    """Small multiples: one panel per metric, each variant's mean with its CI as a horizontal bar."""
    names = list(metrics)
    cols = min(3, max(1, len(names)))
    rows = max(1, math.ceil(len(names) / cols))
    labels = list(dict.fromkeys(i.label for intervals in metrics.values() for i in intervals))
    colours = {label: _VARIANT_COLOURS[k % len(_VARIANT_COLOURS)] for k, label in enumerate(labels)}
    fig, axes = _new_figure(height_in=0.7 + rows * (0.5 + 0.3 * len(labels)), rows=rows, cols=cols)
    for ax, name in zip(axes, names, strict=False):
        for interval in metrics[name]:
            if not _finite(interval.estimate, interval.low, interval.high):
                continue
            ax.errorbar(
                [interval.estimate],
                [labels.index(interval.label)],
                xerr=[[interval.estimate - interval.low], [interval.high - interval.estimate]],
                fmt="o",
                color=colours[interval.label],
                capsize=4,
                label=interval.label,
            )
        ax.set_yticks([])
        ax.set_ylim(-0.6, len(labels) - 0.4)
        ax.invert_yaxis()
        ax.set_title(name, fontsize=9)
        ax.tick_params(axis="x", labelsize=7)
        ax.grid(axis="x", alpha=0.3)
    for ax in axes[len(names) :]:
        ax.set_visible(False)
    handles = [_legend_point(colours[label], label) for label in labels]
    fig.legend(
        handles=handles, loc="outside upper center", ncols=min(len(labels), 4), fontsize=8, frameon=False
    )
    return _to_svg(fig, salt)


def _legend_point(colour: str, label: str) -> Line2D:
    """A legend entry: a point in ``colour``."""
    from matplotlib.lines import Line2D

    return Line2D([], [], color=colour, marker="o", linestyle="-", label=label)


def forest_svg(rows: Sequence[ForestRow], *, salt: str) -> str:
    """One panel per paired difference: estimate and interval, 0, and the threshold it must clear."""
    fig, axes = _new_figure(height_in=0.35 + 0.95 * max(1, len(rows)), rows=max(1, len(rows)))
    for ax, row in zip(axes, rows, strict=False):
        ax.axvline(0.0, color=_GREY, linewidth=0.8)
        ax.axvline(row.reference, color=_RED, linestyle="--", linewidth=1.2, label=row.reference_label)
        if _finite(row.estimate, row.low, row.high):
            ax.errorbar(
                [row.estimate],
                [0],
                xerr=[[row.estimate - row.low], [row.high - row.estimate]],
                fmt="D",
                color=_BLUE,
                capsize=5,
                label="challenger - champion",
            )
            lo, hi = min(row.low, row.reference, 0.0), max(row.high, row.reference, 0.0)
            pad = (hi - lo) * 0.15 or 0.05
            ax.set_xlim(lo - pad, hi + pad)
        ax.set_yticks([0], [row.label], fontsize=8)
        ax.tick_params(axis="x", labelsize=7)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
        ax.grid(axis="x", alpha=0.3)
    return _to_svg(fig, salt)


def cluster_bars_svg(bars: Sequence[ClusterBar], *, metric: str, salt: str) -> str:
    """Horizontal bars of the mean per-case difference in each cluster, most improved at the top."""
    ordered = sorted(bars, key=lambda b: b.mean_difference)
    fig, axes = _new_figure(height_in=0.8 + 0.22 * max(1, len(ordered)))
    ax = axes[0]
    colours = [_GREEN if b.mean_difference > 0 else _RED if b.mean_difference < 0 else _GREY for b in ordered]
    ax.barh(range(len(ordered)), [b.mean_difference for b in ordered], color=colours)
    ax.set_yticks(range(len(ordered)), [f"{b.cluster} (n={b.n_cases})" for b in ordered], fontsize=7)
    ax.axvline(0.0, color=_GREY, linewidth=0.8)
    ax.set_xlabel(f"mean {metric} difference, challenger - champion", fontsize=8)
    ax.tick_params(axis="x", labelsize=7)
    ax.grid(axis="x", alpha=0.3)
    return _to_svg(fig, salt)


def traffic_svg(
    seconds: Sequence[float],
    share_percent: Sequence[float],
    markers: Sequence[TrafficMarker],
    *,
    challenger: str,
    salt: str,
) -> str:
    """Step plot of the challenger's traffic share over time, with guard trips and the rollback marked."""
    fig, axes = _new_figure(height_in=2.8)
    ax = axes[0]
    ax.step(
        list(seconds),
        list(share_percent),
        where="post",
        color=_BLUE,
        linewidth=2,
        label=f"{challenger} share",
    )
    ax.plot(list(seconds), list(share_percent), "o", color=_BLUE, markersize=4)
    labelled: set[str] = set()
    for marker in markers:
        # One legend entry per kind; the table under the figure has each event's full text.
        if marker.kind == "rollback":
            label = None if "rollback" in labelled else "rollback to champion"
            ax.axvline(marker.seconds, color=_RED, linestyle="--", linewidth=1.4, label=label)
        else:
            label = None if "trip" in labelled else "guard tripped"
            ax.plot([marker.seconds], [marker.share_percent], "X", color=_RED, markersize=12, label=label)
        labelled.add(marker.kind)
    ax.set_ylim(-5, 105)
    ax.set_ylabel("challenger traffic %", fontsize=8)
    ax.set_xlabel("seconds since the first traffic change", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", frameon=False)
    return _to_svg(fig, salt)
