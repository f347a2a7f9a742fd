"""One figure style for the whole book.

Every chapter calls :func:`use_style` once and takes colours from ``METHOD_COLORS``, so the
same method has the same colour in every figure (exact = black, Neumann/unroll = blues,
damped = oranges, CG = green, warm start = red, cold start = blue).
"""

from __future__ import annotations

import matplotlib as mpl
import matplotlib.pyplot as plt
import numpy as np

__all__ = [
    "use_style",
    "METHOD_COLORS",
    "method_color",
    "figure",
    "finish",
    "sequential_colors",
    "plot_solution_line",
]

METHOD_COLORS = {
    "exact": "#000000",
    "pinv": "#000000",
    "neumann": "#1f77b4",
    "unroll": "#17becf",
    "damped": "#ff7f0e",
    "cg": "#2ca02c",
    "warm": "#d62728",
    "cold": "#1f77b4",
    "retrain": "#9467bd",
    "direct": "#7f7f7f",
    "original": "#7f7f7f",
    "learned": "#d62728",
}

_STYLE = {
    "figure.dpi": 90,
    "savefig.dpi": 90,
    "figure.figsize": (6.0, 4.0),
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.titlesize": 11,
    "axes.labelsize": 10,
    "legend.fontsize": 8,
    "legend.frameon": False,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "lines.linewidth": 1.8,
    "image.cmap": "viridis",
}


def use_style() -> None:
    """Apply the book's matplotlib style (idempotent)."""
    mpl.rcParams.update(_STYLE)


def method_color(name: str) -> str:
    """Colour of a method by name (``"neumann"``, ``"warm"``, ...); grey if unknown."""
    return METHOD_COLORS.get(name.lower(), "#555555")


def sequential_colors(n: int, cmap: str = "viridis"):
    """``n`` colours along a sequential colormap, e.g. for a sweep over K or time."""
    if n < 1:
        raise ValueError(f"`n` must be >= 1; got {n}.")
    return [mpl.colormaps[cmap](v) for v in np.linspace(0.1, 0.9, n)]


def figure(ncols: int = 1, nrows: int = 1, *, width: float = 4.2, height: float = 3.4, **kw):
    """``plt.subplots`` sized per panel, with the book style and a constrained layout."""
    use_style()
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(width * ncols, height * nrows), layout="constrained", **kw
    )
    return fig, axes


def finish(ax, *, title: str, xlabel: str, ylabel: str, legend: bool = True):
    """Title, axis labels and (if there are labelled artists) a legend: every panel has them."""
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if legend and ax.get_legend_handles_labels()[0]:
        ax.legend()
    return ax


def plot_solution_line(ax, a, target, *, xlim, **kw):
    """Draw the line ``{w in R^2 : a . w = target}`` across ``xlim`` (solution sets in 2-D)."""
    a = np.asarray(a, dtype=float)
    xs = np.linspace(*xlim, 200)
    if abs(a[1]) > 1e-12:
        ax.plot(xs, (target - a[0] * xs) / a[1], **kw)
    else:
        ax.axvline(target / a[0], **kw)
    return ax
