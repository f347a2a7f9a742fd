"""One figure style for the whole book.

Every chapter calls :func:`use_style` once and takes colors from ``METHOD_COLORS``, so the
same method has the same color in every figure (exact = black, Neumann/unroll = blues,
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
    # Unrolling (ITD) is drawn next to Neumann (AID-FP) in most figures: not another blue.
    "unroll": "#8c564b",
    "damped": "#ff7f0e",
    "cg": "#2ca02c",
    "warm": "#d62728",
    "cold": "#1f77b4",
    "retrain": "#9467bd",
    "direct": "#7f7f7f",
    "original": "#7f7f7f",
    "learned": "#d62728",
}

# A page column is about 7 inches wide at the browser's 96 px per inch. Figures are drawn at
# most _MAX_WIDTH inches wide (see `figure`), so text shrinks by at most 7 / 9 on the page, and
# rendered at 150 dpi so it stays sharp when it does.
_MAX_WIDTH = 9.0

_STYLE = {
    "figure.dpi": 150,
    "savefig.dpi": 150,
    "figure.figsize": (6.0, 4.0),
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.titlesize": 11,
    "axes.labelsize": 10.5,
    "legend.fontsize": 9,
    "legend.frameon": False,
    "xtick.labelsize": 9.5,
    "ytick.labelsize": 9.5,
    "lines.linewidth": 1.8,
    "image.cmap": "viridis",
}


def use_style() -> None:
    """Apply the book's matplotlib style (idempotent)."""
    mpl.rcParams.update(_STYLE)


def method_color(name: str) -> str:
    """Color of a method by name (``"neumann"``, ``"warm"``, ...); grey if unknown."""
    return METHOD_COLORS.get(name.lower(), "#555555")


def sequential_colors(n: int, cmap: str = "viridis"):
    """``n`` colors along a sequential colormap, e.g. for a sweep over K or time."""
    if n < 1:
        raise ValueError(f"`n` must be >= 1; got {n}.")
    return [mpl.colormaps[cmap](v) for v in np.linspace(0.1, 0.9, n)]


def figure(ncols: int = 1, nrows: int = 1, *, width: float = 4.2, height: float = 3.4, **kw):
    """``plt.subplots`` sized per panel, with the book style and a constrained layout.

    Panels keep their aspect ratio, but a row of panels wider than the page allows is scaled
    down to ``_MAX_WIDTH`` inches, so that its text stays legible at column width.
    """
    use_style()
    scale = min(1.0, _MAX_WIDTH / (width * ncols))
    width, height = width * scale, height * scale
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


# --- anti-distillation chapter (06) -----------------------------------------------------------

__all__ += ["plot_learned_fit", "plot_original_points"]


def plot_learned_fit(ax, u_learned, x, u_grid, fit, *, color, label, marker="o", **kw):
    """Learned points ``(u_i, x_i)`` as markers and the fitted curve over ``u_grid``, one color.

    ``fit`` is the inner model's prediction on ``u_grid``; the label goes on the curve.
    """
    ax.plot(np.asarray(u_grid), np.asarray(fit), color=color, label=label, **kw)
    ax.plot(np.asarray(u_learned), np.asarray(x), linestyle="none", marker=marker,
            markersize=5, color=color, markeredgecolor="white", markeredgewidth=0.6)
    return ax


def plot_original_points(ax, v, t, *, label="original point"):
    """The original (outer) data points as large grey stars, drawn on top."""
    ax.plot(np.asarray(v), np.asarray(t), linestyle="none", marker="*", markersize=15,
            color=METHOD_COLORS["original"], markeredgecolor="black", label=label, zorder=6)
    return ax


def plot_norms_against(ax, values, outer_norms, inner_norms, *, color, label, exact=None):
    """Outer displacement ``|x - x0|`` (solid) and inner norm ``|w|`` (dashed) against a swept
    value (K or eps, log axis); ``exact=(outer, inner)`` adds the exact levels as thin lines."""
    ax.plot(np.asarray(values), np.asarray(outer_norms), "-o", color=color, markersize=3.5,
            label=f"{label}: |x - x0|")
    ax.plot(np.asarray(values), np.asarray(inner_norms), "--s", color=color, markersize=3.5,
            label=f"{label}: |w|")
    if exact is not None:
        ax.axhline(float(exact[0]), color=METHOD_COLORS["exact"], lw=1.0, ls="-",
                   label="exact: |x - x0|")
        ax.axhline(float(exact[1]), color=METHOD_COLORS["exact"], lw=1.0, ls="--",
                   label="exact: |w|")
    ax.set_xscale("log")
    return ax


__all__ += ["plot_norms_against"]


# --- warm-start memory chapter (04): 2-D classification pictures ----------------------------

__all__ += [
    "CLASS_COLORS",
    "class_colors",
    "plot_decision_boundary",
    "plot_classes",
    "plot_learned_points",
    "plot_trajectories",
    "animation_html",
]

CLASS_COLORS = ("#d62728", "#2ca02c", "#1f77b4", "#ff7f0e", "#9467bd")
"""Colors of classes 0, 1, 2, ... in 2-D classification figures (red, green, blue, ...)."""


def class_colors(num_classes: int):
    """The first ``num_classes`` entries of :data:`CLASS_COLORS`."""
    if not 1 <= num_classes <= len(CLASS_COLORS):
        raise ValueError(f"`num_classes` must be in [1, {len(CLASS_COLORS)}]; got {num_classes}.")
    return list(CLASS_COLORS[:num_classes])


def plot_decision_boundary(ax, predict, *, xlim, ylim, num_classes=2, resolution=150,
                           alpha=0.22, color="#1f77b4", label="decision boundary"):
    """Shade the predicted class of ``predict`` over a grid and draw its decision boundary.

    Args:
      ax: matplotlib axes.
      predict: ``points (n, 2) -> logits (n, num_classes)`` (e.g. a closure over ``mlp.apply``).
      xlim, ylim: the plotted square.
      num_classes: number of classes (colors from :data:`CLASS_COLORS`).
      resolution: grid points per axis.
      alpha: opacity of the class shading.
      color: color of the boundary curve; ``label`` its legend entry (``None`` for none).

    Returns:
      The grid's predicted class, an int array ``(resolution, resolution)``.
    """
    from matplotlib.colors import ListedColormap
    from matplotlib.lines import Line2D

    g1 = np.linspace(*xlim, resolution)
    g2 = np.linspace(*ylim, resolution)
    grid = np.stack(np.meshgrid(g1, g2), axis=-1).reshape(-1, 2).astype(np.float32)
    logits = np.asarray(predict(grid))
    if logits.shape != (grid.shape[0], num_classes):
        raise ValueError(
            f"`predict` must return logits of shape (n, {num_classes}); got {logits.shape}."
        )
    cls = logits.argmax(axis=1).reshape(resolution, resolution)
    levels = np.arange(num_classes + 1) - 0.5
    ax.contourf(g1, g2, cls, levels=levels, cmap=ListedColormap(class_colors(num_classes)),
                alpha=alpha)
    if num_classes == 2:
        margin = (logits[:, 1] - logits[:, 0]).reshape(resolution, resolution)
        if margin.min() < 0 < margin.max():
            ax.contour(g1, g2, margin, levels=[0.0], colors=[color], linewidths=1.8)
    else:
        ax.contour(g1, g2, cls, levels=levels[1:-1], colors=[color], linewidths=1.5)
    if label:
        ax.add_line(Line2D([], [], color=color, linewidth=1.8, label=label))
    ax.set_xlim(*xlim)
    ax.set_ylim(*ylim)
    ax.set_aspect("equal")
    return cls


def plot_classes(ax, points, labels, *, num_classes=None, s=7, alpha=0.55, names=None):
    """Scatter 2-D ``points`` colored by int ``labels`` (one legend entry per class)."""
    points, labels = np.asarray(points), np.asarray(labels)
    n = int(labels.max()) + 1 if num_classes is None else num_classes
    for k, c in enumerate(class_colors(n)):
        name = f"class {k}" if names is None else names[k]
        sel = labels == k
        ax.scatter(points[sel, 0], points[sel, 1], s=s, color=c, alpha=alpha, label=name,
                   linewidths=0)
    return ax


def plot_learned_points(ax, points, labels=None, *, colors=None, size=110, label="learned point"):
    """Learned points as large crosses with a black edge (colored by class when given)."""
    points = np.asarray(points)
    if colors is None:
        labels = np.zeros(len(points), int) if labels is None else np.asarray(labels)
        colors = [CLASS_COLORS[int(k)] for k in labels]
    for i, (p, c) in enumerate(zip(points, colors, strict=True)):
        ax.scatter(p[0], p[1], marker="X", s=size, color=c, edgecolors="black", linewidths=1.2,
                   zorder=5, label=label if i == 0 else None)
    return ax


def plot_trajectories(ax, paths, *, cmap="viridis", linewidth=1.6, label=None, zorder=4):
    """Paths of points over time, each segment colored by its time (early dark, late bright).

    Args:
      ax: matplotlib axes.
      paths: ``(T, m, 2)``: m points over T time steps.
      cmap: sequential colormap for time.
      label: legend entry (one for all paths).

    Returns:
      The ``LineCollection`` (pass it to ``fig.colorbar`` for a time color bar; its values
      run over the time index 0..T-1).
    """
    from matplotlib.collections import LineCollection

    paths = np.asarray(paths)
    if paths.ndim != 3 or paths.shape[-1] != 2 or paths.shape[0] < 2:
        raise ValueError(f"`paths` must have shape (T >= 2, m, 2); got {paths.shape}.")
    t = paths.shape[0]
    segs = np.concatenate(
        [np.stack([paths[:-1, i], paths[1:, i]], axis=1) for i in range(paths.shape[1])]
    )
    times = np.tile(np.arange(t - 1), paths.shape[1])
    lines = LineCollection(segs, cmap=cmap, linewidths=linewidth, label=label, zorder=zorder)
    lines.set_array(times)
    lines.set_clim(0, t - 1)
    ax.add_collection(lines)
    return lines


def animation_html(fig, update, frames, *, interval=120, dpi=100):
    """Render ``update(i)`` for ``i`` in ``range(frames)`` as a self-contained HTML animation.

    A ``matplotlib.animation.FuncAnimation`` exported with ``to_jshtml``: the frames are PNGs
    embedded in the page, so it plays in a static HTML book (show it with
    ``IPython.display.HTML``). Every frame is a PNG in the notebook, so the frames are rendered
    at ``dpi`` (default 100, below the style's 150) and ``frames`` should stay small; the figure
    is closed.

    Deprecated: matplotlib's player loads its button icons from a CDN, so it breaks in an
    offline book; use :func:`bilevel_lib.interactive.slider_figure` (no network).

    Returns:
      The HTML string.
    """
    import warnings

    from matplotlib.animation import FuncAnimation

    warnings.warn("plotting.animation_html is deprecated: its player loads icons from a CDN; "
                  "use bilevel_lib.interactive.slider_figure.", DeprecationWarning, stacklevel=2)

    if frames < 1:
        raise ValueError(f"`frames` must be >= 1; got {frames}.")
    anim = FuncAnimation(fig, update, frames=frames, interval=interval, blit=False)
    with mpl.rc_context({"savefig.dpi": dpi}):
        html = anim.to_jshtml(default_mode="once")
    plt.close(fig)
    return html


# --- CG direction by direction (chapters 03 and 06) ------------------------------------------

__all__ += ["draw_cg_directions"]


def draw_cg_directions(ax, lam, errors, exact, *, norm, title, floor=1e-16):
    """Relative CG error per eigendirection against the step count K, and the null part.

    For the output of :func:`bilevel_lib.spectral.cg_direction_errors` (``lam``: eigenvalues
    of ``H``; ``errors[K, i] = |u_i^T (v_K - v*)|``; ``exact[i] = |u_i^T v*|``) it draws, on
    a log axis, one line per direction that the right-hand side reaches,
    ``errors[:, i] / exact[i]``, colored by its eigenvalue through ``norm``; the part of the
    iterate in the null space of ``H``, ``||(I - P) v_K|| / ||v*||``, as a dashed black line;
    and the 10 % level as a dotted line. Values are clipped below at ``floor`` for the log axis.

    Args:
      ax: matplotlib axes.
      lam, errors, exact: ``(n,)``, ``(K_max + 1, n)``, ``(n,)`` (eigenvalues ascending).
      norm: a matplotlib ``Normalize`` (e.g. ``LogNorm``) from eigenvalue to color.
      title: panel title.
      floor: lower clip of the plotted ratios.

    Returns:
      A ``ScalarMappable`` for ``fig.colorbar`` (eigenvalue color bar).

    Example:
      >>> import numpy as np
      >>> from matplotlib.colors import LogNorm
      >>> fig, ax = figure()
      >>> lam = np.array([0.0, 1.0, 2.0])
      >>> err = np.array([[0.0, 1.0, 2.0], [0.5, 0.1, 0.0]])
      >>> m = draw_cg_directions(ax, lam, err, np.array([0.0, 1.0, 2.0]),
      ...                        norm=LogNorm(1.0, 2.0), title="t")
      >>> len(ax.lines)   # two directions, the null part, the 10 % line
      4
      >>> plt.close(fig)
    """
    from matplotlib.cm import ScalarMappable

    lam, errors, exact = map(np.asarray, (lam, errors, exact))
    ks = np.arange(errors.shape[0])
    cmap = plt.get_cmap("viridis")
    for j in np.flatnonzero(exact > 1e-8 * exact.max()):
        ax.semilogy(ks, np.maximum(errors[:, j] / exact[j], floor), "o-",
                    ms=3, lw=1.2, color=cmap(norm(lam[j])))
    null = np.linalg.norm(errors[:, lam < 1e-10 * lam[-1]], axis=1) / np.linalg.norm(exact)
    ax.semilogy(ks, np.maximum(null, floor), "k--", lw=1.4,
                label=r"null part $\|(I - P)v_K\| / \|v^*\|$")
    ax.axhline(0.1, color="0.5", lw=0.8, ls=":", label="10 %")
    finish(ax, title=title, xlabel=r"CG steps $K$",
           ylabel=r"$|u_i^\top (v_K - v^*)| \,/\, |u_i^\top v^*|$", legend=False)
    return ScalarMappable(norm=norm, cmap=cmap)
