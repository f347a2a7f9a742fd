r"""Closed forms for convex quadratic bilevel problems (the paper's Assumption 3.1).

These are the "known answers" the theory chapters and the tests compare iterative methods with:

* :func:`closest_minimizer` -- Lemma C.1: gradient descent on ``f(y) = 1/2 y^T H y + b^T y``
  from ``y0`` converges to ``y0 - H^+ (H y0 + b)``, the minimiser closest to ``y0``;
* :func:`closest_solution` -- the same for least squares ``min |A y - t|^2``:
  ``y0 + A^+ (t - A y0)``;
* :func:`project_hyperplane` -- one Kaczmarz step, the projection onto ``{w : a.w = t}``;
* :func:`min_norm_outer_solution` -- Theorem 3.1: cold-start BLO with exact hypergradients on
  ``f = 1/2|Phi y - x|^2``, ``F = 1/2|Psi y - t|^2`` converges to the outer solution closest to
  ``x0``.
"""

from __future__ import annotations

import jax.numpy as jnp

__all__ = [
    "closest_minimizer",
    "closest_solution",
    "project_hyperplane",
    "kaczmarz",
    "min_norm_outer_solution",
]


def _pinv(a, rtol=None):
    return jnp.linalg.pinv(a, rtol=rtol)


def closest_minimizer(hess, b, y0, *, rtol=None):
    r"""Minimiser of ``1/2 y^T H y + b^T y`` closest to ``y0`` (Lemma C.1).

    .. math:: y_\infty = y_0 - H^{+}(H y_0 + b)

    This is where gradient descent from ``y0`` with ``0 < lr < 2/lambda_max`` converges, provided
    the quadratic is bounded below (``b`` in ``range(H)``).

    Args:
      hess: symmetric PSD matrix ``H`` (n, n).
      b: linear term (n,).
      y0: starting point (n,).
      rtol: pinv cut-off.

    Returns:
      Array (n,).

    Example:
      >>> import jax.numpy as jnp
      >>> H = jnp.array([[1.0, 0.0], [0.0, 0.0]])      # f depends on y[0] only
      >>> closest_minimizer(H, jnp.array([-2.0, 0.0]), jnp.array([5.0, 7.0])).tolist()
      [2.0, 7.0]
    """
    hess, b, y0 = jnp.asarray(hess), jnp.asarray(b), jnp.asarray(y0)
    if hess.ndim != 2 or hess.shape[0] != hess.shape[1]:
        raise ValueError(f"`hess` must be a square matrix; got shape {hess.shape}.")
    if b.shape != (hess.shape[0],) or y0.shape != (hess.shape[0],):
        raise ValueError(
            f"`b` and `y0` must have shape ({hess.shape[0]},); got {b.shape} and {y0.shape}."
        )
    return y0 - _pinv(hess, rtol) @ (hess @ y0 + b)


def closest_solution(a, t, y0, *, rtol=None):
    r"""Least-squares solution of ``A y = t`` closest to ``y0``.

    .. math:: y^\star = y_0 + A^{+}(t - A y_0) = \arg\min_{y \in \arg\min |Ay - t|} |y - y_0|

    Args:
      a: matrix (m, n); t: targets (m,) or (m, k); y0: start (n,) or (n, k).
      rtol: pinv cut-off.

    Example:
      >>> import jax.numpy as jnp
      >>> closest_solution(jnp.array([[1.0, 1.0]]), jnp.array([2.0]), jnp.zeros(2)).round(5).tolist()
      [1.0, 1.0]
    """
    a, t, y0 = jnp.asarray(a), jnp.asarray(t), jnp.asarray(y0)
    if a.ndim != 2:
        raise ValueError(f"`a` must be a matrix; got shape {a.shape}.")
    if t.shape[0] != a.shape[0]:
        raise ValueError(f"`t` must have {a.shape[0]} rows (one per row of `a`); got {t.shape}.")
    if y0.shape[0] != a.shape[1]:
        raise ValueError(f"`y0` must have {a.shape[1]} rows (columns of `a`); got {y0.shape}.")
    return y0 + _pinv(a, rtol) @ (t - a @ y0)


def project_hyperplane(w, a, target):
    r"""Project ``w`` onto the hyperplane ``{v : a . v = target}`` (one Kaczmarz step).

    .. math:: P(w) = w + \frac{\text{target} - a \cdot w}{a \cdot a}\, a

    With ``a = (u, 1)`` the homogeneous coordinates of a learned input ``u`` and ``target`` its
    label, this is where cold-start (from ``w0``) or full warm-start (from ``w_t``) gradient
    descent on a linear model trained on that one point converges (paper, App. B.2).

    Example:
      >>> import jax.numpy as jnp
      >>> project_hyperplane(jnp.zeros(2), jnp.array([1.0, 1.0]), 2.0).tolist()
      [1.0, 1.0]
    """
    w, a = jnp.asarray(w), jnp.asarray(a)
    if w.shape != a.shape:
        raise ValueError(f"`w` and `a` must have the same shape; got {w.shape} and {a.shape}.")
    aa = jnp.vdot(a, a)
    return w + (target - jnp.vdot(a, w)) / aa * a


def kaczmarz(w0, rows, targets, *, sweeps=1):
    r"""Cyclic Kaczmarz: project ``w0`` onto each row's hyperplane in turn, ``sweeps`` times.

    Returns the stacked iterates (``sweeps * len(rows) + 1``, n), starting with ``w0``. For a
    consistent system the iterates converge to the solution closest to ``w0``.

    Example:
      >>> import jax.numpy as jnp
      >>> rows = jnp.array([[1.0, 0.0], [0.0, 1.0]])
      >>> kaczmarz(jnp.zeros(2), rows, jnp.array([1.0, 2.0]))[-1].tolist()
      [1.0, 2.0]
    """
    rows, targets = jnp.asarray(rows), jnp.asarray(targets)
    if rows.ndim != 2 or targets.shape != (rows.shape[0],):
        raise ValueError(
            f"`rows` must be (m, n) and `targets` (m,); got {rows.shape} and {targets.shape}."
        )
    iterates = [jnp.asarray(w0)]
    for _ in range(sweeps):
        for a, t in zip(rows, targets, strict=True):
            iterates.append(project_hyperplane(iterates[-1], a, t))
    return jnp.stack(iterates)


def min_norm_outer_solution(phi, psi, t, x0, y0=None, *, rtol=None):
    r"""Outer solution closest to ``x0`` for the linear least-squares bilevel problem (Thm 3.1).

    Inner ``f(x, y) = 1/2 |Phi y - x|^2`` solved by gradient descent from ``y0`` gives
    ``y(x) = y0 + Phi^+ (x - Phi y0)``; outer ``F(y) = 1/2 |Psi y - t|^2`` then reads
    ``1/2 |M x - t'|^2`` with ``M = Psi Phi^+`` and ``t' = t - Psi (I - Phi^+ Phi) y0``, and
    gradient descent on it from ``x0`` converges to

    .. math:: x^\star = x_0 + M^{+}(t' - M x_0).

    Args:
      phi: (m, n) features of the m learned points (rows).
      psi: (p, n) features of the p original points.
      t: (p,) original targets.
      x0: (m,) initial learned targets.
      y0: (n,) inner initialisation (default zeros).

    Returns:
      ``(x_star, y_star)``: the outer limit and the inner solution there.

    Example:
      >>> import jax.numpy as jnp
      >>> phi = jnp.array([[1.0, 0.0], [1.0, 1.0]])   # invertible: x* reproduces t exactly
      >>> x, y = min_norm_outer_solution(phi, jnp.eye(2), jnp.array([1.0, 2.0]), jnp.zeros(2))
      >>> x.round(5).tolist(), y.round(5).tolist()
      ([1.0, 3.0], [1.0, 2.0])
    """
    phi, psi, t, x0 = map(jnp.asarray, (phi, psi, t, x0))
    if phi.ndim != 2 or psi.ndim != 2 or phi.shape[1] != psi.shape[1]:
        raise ValueError(
            f"`phi` (m, n) and `psi` (p, n) must share n; got {phi.shape} and {psi.shape}."
        )
    if t.shape != (psi.shape[0],):
        raise ValueError(f"`t` must have shape ({psi.shape[0]},); got {t.shape}.")
    if x0.shape != (phi.shape[0],):
        raise ValueError(f"`x0` must have shape ({phi.shape[0]},); got {x0.shape}.")
    y0 = jnp.zeros(phi.shape[1], phi.dtype) if y0 is None else jnp.asarray(y0)
    phi_pinv = _pinv(phi, rtol)
    m = psi @ phi_pinv
    t_eff = t - psi @ (y0 - phi_pinv @ (phi @ y0))
    x_star = x0 + _pinv(m, rtol) @ (t_eff - m @ x0)
    y_star = y0 + phi_pinv @ (x_star - phi @ y0)
    return x_star, y_star
