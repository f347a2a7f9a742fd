r"""Seeded 2-D toy data sets, generated (nothing is read or downloaded).

* :func:`rings` -- ``num_classes`` concentric rings, class ``k`` at radius ``radii[k]``
  (the dataset-distillation task of the paper's Sec. 4.1, Fig. 7, 12, 13);
* :func:`sinusoid` -- a binary task whose true decision boundary is the curve
  ``u_2 = a sin(omega u_1)`` (the paper's Fig. 2);
* :func:`sinusoid_boundary` -- that curve, for plotting.

Points are float32 ``(N, 2)`` arrays, labels int32 ``(N,)``. The same ``seed`` gives the same
data on every platform (NumPy's ``default_rng``). The image benchmarks are loaded by
:mod:`bilevel_lib.tasks.image_data`.
"""

from __future__ import annotations

import numbers

import jax.numpy as jnp
import numpy as np

from .. import _checks

__all__ = ["rings", "sinusoid", "sinusoid_boundary"]


def _check_nonneg(value, name):
    if not isinstance(value, numbers.Real) or not np.isfinite(value) or value < 0:
        raise ValueError(f"`{name}` must be a finite number >= 0; got {value!r}.")
    return float(value)


def rings(n_per_class, *, num_classes=2, radii=None, noise=0.1, seed=0):
    r"""Concentric rings: ``n_per_class`` points of class ``k`` around radius ``radii[k]``.

    .. math:: u = (r_k + \sigma \xi)\,(\cos\theta, \sin\theta),\qquad
              \theta \sim U[0, 2\pi),\ \xi \sim N(0, 1)

    Args:
      n_per_class: points per class (int >= 1); every class gets exactly this many.
      num_classes: number of rings (int >= 2).
      radii: increasing positive radii, one per class (default ``1, 2, ..., num_classes``).
      noise: standard deviation sigma of the radial noise (>= 0).
      seed: integer seed.

    Returns:
      ``(points, labels)``: float32 ``(num_classes * n_per_class, 2)`` and int32 labels, class
      by class (all of class 0 first).

    Example:
      >>> points, labels = rings(100, noise=0.0)
      >>> points.shape, labels.tolist().count(1)
      ((200, 2), 100)
      >>> radius = jnp.linalg.norm(points, axis=1)
      >>> round(float(radius[labels == 0].mean()), 4), round(float(radius[labels == 1].mean()), 4)
      (1.0, 2.0)
    """
    n = _checks.check_int(n_per_class, "n_per_class", lowest=1)
    c = _checks.check_int(num_classes, "num_classes", lowest=2)
    noise = _check_nonneg(noise, "noise")
    radii = np.arange(1, c + 1, dtype=float) if radii is None else np.asarray(radii, float)
    if radii.shape != (c,):
        raise ValueError(f"`radii` must have one entry per class ({c}); got shape {radii.shape}.")
    if not np.all(np.isfinite(radii)) or np.any(radii <= 0) or np.any(np.diff(radii) <= 0):
        raise ValueError(f"`radii` must be positive and increasing; got {radii.tolist()}.")
    rng = np.random.default_rng(seed)
    theta = rng.uniform(0.0, 2.0 * np.pi, size=(c, n))
    radius = radii[:, None] + noise * rng.standard_normal((c, n))
    points = np.stack([radius * np.cos(theta), radius * np.sin(theta)], axis=-1).reshape(-1, 2)
    labels = np.repeat(np.arange(c), n)
    return jnp.asarray(points, jnp.float32), jnp.asarray(labels, jnp.int32)


def sinusoid_boundary(u1, *, amplitude=0.5, frequency=2.0):
    r"""The true decision boundary of :func:`sinusoid`: ``u_2 = a sin(omega u_1)``.

    Example:
      >>> round(float(sinusoid_boundary(jnp.pi / 4, amplitude=1.0, frequency=2.0)), 6)
      1.0
    """
    return amplitude * jnp.sin(frequency * jnp.asarray(u1))


def sinusoid(n, *, amplitude=0.5, frequency=2.0, extent=1.5, margin=0.0, seed=0):
    r"""A binary task with a sinusoidal true decision boundary.

    Points are uniform in the square ``[-extent, extent]^2``; the label is 1 above the curve
    ``u_2 = a sin(omega u_1)`` and 0 below. Points closer than ``margin`` (vertically) to the
    curve are redrawn, so a positive margin makes the classes separable with a gap.

    Args:
      n: number of points (int >= 2).
      amplitude: a (>= 0).
      frequency: omega (>= 0).
      extent: half-width of the square (> 0).
      margin: vertical gap kept free around the boundary (>= 0, below ``extent``).
      seed: integer seed.

    Returns:
      ``(points, labels)``: float32 ``(n, 2)``, int32 ``(n,)``.

    Example:
      >>> points, labels = sinusoid(500, margin=0.1)
      >>> gap = points[:, 1] - sinusoid_boundary(points[:, 0])
      >>> bool(jnp.all((gap > 0.1) == (labels == 1))), bool(jnp.all(jnp.abs(gap) > 0.1))
      (True, True)
    """
    n = _checks.check_int(n, "n", lowest=2)
    amplitude = _check_nonneg(amplitude, "amplitude")
    frequency = _check_nonneg(frequency, "frequency")
    margin = _check_nonneg(margin, "margin")
    if not isinstance(extent, numbers.Real) or not extent > 0:
        raise ValueError(f"`extent` must be > 0; got {extent!r}.")
    if margin >= extent:
        raise ValueError(f"`margin` ({margin}) must be smaller than `extent` ({extent}).")
    rng = np.random.default_rng(seed)
    kept = np.zeros((0, 2))
    while kept.shape[0] < n:
        draw = rng.uniform(-extent, extent, size=(2 * n, 2))
        gap = draw[:, 1] - amplitude * np.sin(frequency * draw[:, 0])
        kept = np.concatenate([kept, draw[np.abs(gap) > margin]])
    points = kept[:n]
    labels = (points[:, 1] > amplitude * np.sin(frequency * points[:, 0])).astype(np.int32)
    return jnp.asarray(points, jnp.float32), jnp.asarray(labels)
