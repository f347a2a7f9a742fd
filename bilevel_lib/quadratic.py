r"""Closed forms for convex quadratic bilevel problems (the paper's Assumption 3.1).

These are the "known answers" the theory chapters and the tests compare iterative methods with:

* :func:`closest_minimizer` -- Lemma C.1: gradient descent on ``f(y) = 1/2 y^T H y + b^T y``
  from ``y0`` converges to ``y0 - H^+ (H y0 + b)``, the minimizer closest to ``y0``;
* :func:`closest_solution` -- the same for least squares ``min |A y - t|^2``:
  ``y0 + A^+ (t - A y0)``;
* :func:`project_hyperplane` -- one Kaczmarz step, the projection onto ``{w : a.w = t}``;
* :func:`min_norm_outer_solution` -- Theorem 3.1: cold-start BLO with exact hypergradients on
  ``f = 1/2|Phi y - x|^2``, ``F = 1/2|Psi y - t|^2`` converges to the outer solution closest to
  ``x0``.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.typing import ArrayLike

from . import _checks, linalg

__all__ = [
    "closest_minimizer",
    "closest_solution",
    "project_hyperplane",
    "kaczmarz",
    "min_norm_outer_solution",
    "gradient_descent",
    "optimistic_value",
    "pessimistic_value",
    "optimistic_outer_solution",
    "filtered_outer_solution",
    "least_squares_objectives",
    "random_least_squares",
]

Array = jax.Array


def _pinv(a, rtol=None):
    """Pseudoinverse by SVD with the library's one zero threshold (``linalg.zero_threshold``)."""
    u, s, vt = jnp.linalg.svd(a, full_matrices=False)
    keep = s > linalg.zero_threshold(s, rtol=rtol)
    inv = jnp.where(keep, 1.0 / jnp.where(keep, s, 1.0), 0.0)
    return (vt.T * inv) @ u.T


def _check_quadratic(hess, b, y0):
    hess, b, y0 = jnp.asarray(hess), jnp.asarray(b), jnp.asarray(y0)
    if hess.ndim != 2 or hess.shape[0] != hess.shape[1]:
        raise ValueError(f"`hess` must be a square matrix; got shape {hess.shape}.")
    if b.shape != (hess.shape[0],) or y0.shape != (hess.shape[0],):
        raise ValueError(
            f"`b` and `y0` must have shape ({hess.shape[0]},); got {b.shape} and {y0.shape}."
        )
    return hess, b, y0


def closest_minimizer(hess: ArrayLike, b: ArrayLike, y0: ArrayLike, *,
                      rtol: float | None = None) -> Array:
    r"""Minimizer of ``1/2 y^T H y + b^T y`` closest to ``y0`` (Lemma C.1).

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
    hess, b, y0 = _check_quadratic(hess, b, y0)
    return y0 - _pinv(hess, rtol) @ (hess @ y0 + b)


def closest_solution(a: ArrayLike, t: ArrayLike, y0: ArrayLike, *,
                     rtol: float | None = None) -> Array:
    r"""Least-squares solution of ``A y = t`` closest to ``y0``.

    .. math:: y^\star = y_0 + A^{+}(t - A y_0) = \arg\min_{y \in \arg\min |Ay - t|} |y - y_0|

    Args:
      a: matrix (m, n); t: targets (m,) or (m, k); y0: start (n,) or (n, k).
      rtol: pinv cut-off.

    Example:
      >>> import jax.numpy as jnp
      >>> y = closest_solution(jnp.array([[1.0, 1.0]]), jnp.array([2.0]), jnp.zeros(2))
      >>> y.round(5).tolist()
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


def project_hyperplane(w: ArrayLike, a: ArrayLike, target: ArrayLike) -> Array:
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


def kaczmarz(w0: ArrayLike, rows: ArrayLike, targets: ArrayLike, *, sweeps: int = 1) -> Array:
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


def min_norm_outer_solution(phi: ArrayLike, psi: ArrayLike, t: ArrayLike, x0: ArrayLike,
                            y0: ArrayLike | None = None, *,
                            rtol: float | None = None) -> tuple[Array, Array]:
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
      y0: (n,) inner initialization (default zeros).

    Returns:
      ``(x_star, y_star)``: the outer limit and the inner solution there.

    Example:
      >>> import jax.numpy as jnp
      >>> phi = jnp.array([[1.0, 0.0], [1.0, 1.0]])   # invertible: x* reproduces t exactly
      >>> x, y = min_norm_outer_solution(phi, jnp.eye(2), jnp.array([1.0, 2.0]), jnp.zeros(2))
      >>> x.round(5).tolist(), y.round(5).tolist()
      ([1.0, 3.0], [1.0, 2.0])
    """
    phi, psi, t, x0 = _check_family(phi, psi, t, x0, "x0")
    y0 = jnp.zeros(phi.shape[1], phi.dtype) if y0 is None else jnp.asarray(y0)
    phi_pinv = _pinv(phi, rtol)
    m = psi @ phi_pinv
    t_eff = t - psi @ (y0 - phi_pinv @ (phi @ y0))
    x_star = x0 + _pinv(m, rtol) @ (t_eff - m @ x0)
    y_star = y0 + phi_pinv @ (x_star - phi @ y0)
    return x_star, y_star


# ---------------------------------------------------------------------------------------------
# Solution concepts of the linear least-squares bilevel problem (chapter "Solution concepts")
# ---------------------------------------------------------------------------------------------


def gradient_descent(hess: ArrayLike, b: ArrayLike, y0: ArrayLike, *, lr: ArrayLike, steps: int,
                     trace: bool = False) -> Array:
    r"""``steps`` steps of gradient descent on ``f(y) = 1/2 y^T H y + b^T y`` from ``y0``.

    .. math:: y_{k+1} = y_k - \alpha (H y_k + b),\qquad
              y_k = y_\infty + (I - \alpha H)^k (y_0 - y_\infty)

    with ``y_inf = closest_minimizer(H, b, y0)`` (Lemma C.1; the paper's Eq. 35). The part of
    ``y_k - y0`` in ``null(H)`` is zero for every step size: for ``0 < lr < 2/lambda_max`` the
    rest contracts, so the limit is the minimizer closest to ``y0``; past ``2/lambda_max`` the
    range part diverges along the top eigenvector while the null-space part still never moves.
    For least squares ``1/2 |A y - t|^2`` pass ``hess = A^T A`` and ``b = -A^T t``.

    Args:
      hess: symmetric PSD matrix ``H`` (n, n).
      b: linear term (n,); the quadratic is bounded below iff ``b`` is in ``range(H)``.
      y0: starting point (n,).
      lr: step size ``alpha > 0`` (may be traced, so a sweep over step sizes is one ``vmap``;
        checked only when concrete).
      steps: number of steps (static Python int >= 0).
      trace: also return every iterate.

    Returns:
      ``y_steps`` (n,), or with ``trace=True`` the iterates ``y_0 .. y_steps`` (steps + 1, n).

    Example:
      >>> import jax.numpy as jnp
      >>> H = jnp.array([[1.0, 0.0], [0.0, 0.0]])      # f = (y[0] - 2)^2 / 2 + const
      >>> gradient_descent(H, jnp.array([-2.0, 0.0]), jnp.array([5.0, 7.0]), lr=1.0,
      ...                  steps=3).tolist()
      [2.0, 7.0]
    """
    hess, b, y0 = _check_quadratic(hess, b, y0)
    _checks.check_positive(lr, "lr")
    steps = _checks.check_steps(steps, "steps")

    def body(y, _):
        y_next = y - lr * (hess @ y + b)
        return y_next, y_next

    y_last, path = lax.scan(body, y0, None, length=steps)
    if trace:
        return jnp.concatenate([y0[None], path], axis=0)
    return y_last


def _check_family(phi, psi, t, x, x_name):
    phi, psi, t, x = map(jnp.asarray, (phi, psi, t, x))
    if phi.ndim != 2 or psi.ndim != 2 or phi.shape[1] != psi.shape[1]:
        raise ValueError(
            f"`phi` (m, n) and `psi` (p, n) must share n; got {phi.shape} and {psi.shape}."
        )
    if t.shape != (psi.shape[0],):
        raise ValueError(f"`t` must have shape ({psi.shape[0]},); got {t.shape}.")
    if x.shape != (phi.shape[0],):
        raise ValueError(f"`{x_name}` must have shape ({phi.shape[0]},); got {x.shape}.")
    return phi, psi, t, x


def _pinv_above(a, cutoff):
    """Pseudoinverse keeping only singular values above an *absolute* ``cutoff``."""
    u, s, vt = jnp.linalg.svd(a, full_matrices=False)
    keep = s > cutoff
    inv = jnp.where(keep, 1.0 / jnp.where(keep, s, 1.0), 0.0)
    return (vt.T * inv) @ u.T


def _null_part(phi, psi, rtol, tol):
    r"""``(Phi^+, N, G, G^+, cut)`` with ``N`` an orthonormal basis of ``null(Phi)``.

    ``N`` is ``(n, n)`` with zero columns outside the null space (shapes stay static under
    ``jit``), ``G = Psi N`` says how the outer loss varies along ``S(x)``. Singular values of
    ``G`` below ``cut = tol * |Psi|_2`` are treated as zero: ``G`` is formed from a computed
    basis, and a relative cut-off would promote rounding noise (a ``G`` that is zero in exact
    arithmetic) to a direction.
    """
    m, n = phi.shape
    _, s, vt = jnp.linalg.svd(phi, full_matrices=True)
    s_full = jnp.zeros(n, s.dtype).at[: s.shape[0]].set(s)
    null = vt.T * (s_full <= linalg.zero_threshold(s, rtol=rtol))
    tol = jnp.sqrt(jnp.finfo(phi.dtype).eps) if tol is None else tol
    cut = tol * jnp.linalg.norm(psi, 2)
    g = psi @ null
    return _pinv(phi, rtol), null, g, _pinv_above(g, cut), cut


def optimistic_value(phi: ArrayLike, psi: ArrayLike, t: ArrayLike, x: ArrayLike, *,
                     rtol: float | None = None, tol: float | None = None) -> Array:
    r"""The optimistic value function: the best outer loss over the inner solution set.

    For ``f(x, y) = 1/2 |Phi y - x|^2`` the inner solution set is
    ``S(x) = Phi^+ x + null(Phi)``; with ``N`` a basis of ``null(Phi)``, ``G = Psi N`` and
    ``r(x) = Psi Phi^+ x - t``,

    .. math:: \varphi_{\rm o}(x) = \min_{y \in S(x)} \tfrac12 |\Psi y - t|^2
              = \tfrac12 |(I - G G^{+})\, r(x)|^2 .

    Optimistic BLO minimizes this over ``x``. When ``G`` has full row rank (generic for an
    inner problem with at least ``m + p`` parameters), ``phi_o`` is zero for every ``x``.

    Args:
      phi: (m, n) inner design matrix; psi: (p, n) outer design matrix; t: (p,) targets;
      x: (m,) outer parameters (the inner targets).
      rtol: relative cut-off for the rank of ``Phi`` (default ``10 * eps``).
      tol: singular values of ``G`` below ``tol * |Psi|_2`` count as zero (default
        ``sqrt(eps)`` of the dtype).

    Returns:
      Scalar.

    Example:
      >>> import jax.numpy as jnp
      >>> phi, psi = jnp.array([[1.0, 0.0]]), jnp.array([[0.0, 1.0]])   # y[1] is free in S(x)
      >>> float(optimistic_value(phi, psi, jnp.array([3.0]), jnp.array([5.0])))
      0.0
    """
    phi, psi, t, x = _check_family(phi, psi, t, x, "x")
    phi_pinv, _, g, g_pinv, _ = _null_part(phi, psi, rtol, tol)
    r = psi @ (phi_pinv @ x) - t
    r_out = r - g @ (g_pinv @ r)
    return 0.5 * jnp.vdot(r_out, r_out)


def pessimistic_value(phi: ArrayLike, psi: ArrayLike, t: ArrayLike, x: ArrayLike, *,
                      rtol: float | None = None, tol: float | None = None) -> Array:
    r"""The pessimistic value function: the worst outer loss over the inner solution set.

    .. math:: \varphi_{\rm p}(x) = \sup_{y \in S(x)} \tfrac12 |\Psi y - t|^2
              = \begin{cases} +\infty & \text{if } \Psi N \ne 0,\\
                \tfrac12 |\Psi \Phi^{+} x - t|^2 & \text{if } \Psi N = 0 \end{cases}

    (``N`` a basis of ``null(Phi)``). ``S(x)`` is an unbounded affine set, and a convex
    quadratic that is not constant on it is unbounded above: the pessimistic problem is
    ``+inf`` at *every* ``x`` unless the outer loss ignores ``null(Phi)`` (``row(Psi)`` inside
    ``row(Phi)``); then it is constant on ``S(x)`` and the pessimistic, optimistic and
    cold-start objectives coincide.

    Args:
      phi, psi, t, x, rtol: as in :func:`optimistic_value`.
      tol: ``Psi N`` counts as zero when its spectral norm is below ``tol * |Psi|_2``
        (default ``sqrt(eps)`` of the dtype).

    Returns:
      Scalar (``inf`` when unbounded).

    Example:
      >>> import jax.numpy as jnp
      >>> phi = jnp.array([[1.0, 0.0]])
      >>> float(pessimistic_value(phi, jnp.array([[0.0, 1.0]]), jnp.array([3.0]), jnp.ones(1)))
      inf
      >>> float(pessimistic_value(phi, jnp.array([[2.0, 0.0]]), jnp.array([3.0]), jnp.ones(1)))
      0.5
    """
    phi, psi, t, x = _check_family(phi, psi, t, x, "x")
    phi_pinv, _, g, _, cut = _null_part(phi, psi, rtol, tol)
    r = psi @ (phi_pinv @ x) - t
    bounded = jnp.linalg.norm(g, 2) <= cut
    return jnp.where(bounded, 0.5 * jnp.vdot(r, r), jnp.inf)


def optimistic_outer_solution(phi: ArrayLike, psi: ArrayLike, t: ArrayLike, x0: ArrayLike, *,
                              rtol: float | None = None,
                              tol: float | None = None) -> tuple[Array, Array]:
    r"""The optimistic solution closest to ``x0``, and the best inner point for it.

    Optimistic BLO minimizes :func:`optimistic_value`, a least-squares problem in ``x`` with
    matrix ``A = (I - G G^+) Psi Phi^+`` (``G = Psi N``, ``N`` a basis of ``null(Phi)``); its
    solution closest to ``x0`` is ``x = x0 + A^+ ((I - G G^+) t - A x0)``. The inner point
    returned is the minimizer of the outer loss over ``S(x)`` closest to ``Phi^+ x``:
    ``y = Phi^+ x + N G^+ (t - Psi Phi^+ x)``. The optimal value is ``min_y F(y)``: ``x`` can
    always be chosen as ``Phi y`` for an outer-optimal ``y``.

    Args:
      phi, psi, t, rtol, tol: as in :func:`optimistic_value` (``tol`` also cuts the singular
        values of ``A`` below ``tol * |Psi Phi^+|_2``); x0: (m,) reference point.

    Returns:
      ``(x, y)``.

    Example:
      >>> import jax.numpy as jnp
      >>> phi, psi = jnp.array([[1.0, 0.0]]), jnp.array([[0.0, 1.0]])
      >>> x, y = optimistic_outer_solution(phi, psi, jnp.array([3.0]), jnp.array([5.0]))
      >>> x.tolist(), y.tolist()      # every x is optimistic-optimal: x0 itself is returned
      ([5.0], [5.0, 3.0])
    """
    phi, psi, t, x0 = _check_family(phi, psi, t, x0, "x0")
    phi_pinv, null, g, g_pinv, _ = _null_part(phi, psi, rtol, tol)
    tol = jnp.sqrt(jnp.finfo(phi.dtype).eps) if tol is None else tol
    keep = jnp.eye(psi.shape[0], dtype=psi.dtype) - g @ g_pinv
    m_mat = psi @ phi_pinv
    a = keep @ m_mat
    x = x0 + _pinv_above(a, tol * jnp.linalg.norm(m_mat, 2)) @ (keep @ t - a @ x0)
    y = phi_pinv @ x + null @ (g_pinv @ (t - m_mat @ x))
    return x, y


def filtered_outer_solution(phi: ArrayLike, psi: ArrayLike, t: ArrayLike, x0: ArrayLike,
                            filt: Callable[[Array], Array], y0: ArrayLike | None = None, *,
                            rtol: float | None = None) -> tuple[Array, Array]:
    r"""Where cold-start BLO converges when ``H^+`` is replaced by a spectral filter ``g(H)``.

    With the inner solved to convergence from ``y0`` and a hypergradient that replaces
    ``1/lambda`` by ``g(lambda)`` on ``H = Phi^T Phi`` (Neumann, damped; see
    :mod:`bilevel_lib.spectral`), the hypergradient is ``P M^T (M x - t')`` with
    ``M = Psi Phi^+``, ``t'`` as in :func:`min_norm_outer_solution` and the PSD matrix
    ``P = Phi g(H) Phi^T``. Outer gradient descent is then preconditioned gradient descent;
    in the variable ``z`` with ``x = x0 + P^{1/2} z`` it is plain gradient descent from
    ``z = 0``, so by Lemma C.1 it converges to

    .. math:: x_\infty = x_0 + P^{1/2} (M P^{1/2})^{+} (t' - M x_0),

    the outer solution closest to ``x0`` in the metric ``|x - x0|_{P^+}`` (within
    ``x0 + range(P)``). With the pseudoinverse filter ``P`` is the projector onto
    ``range(Phi)`` and this is :func:`min_norm_outer_solution`.

    Args:
      phi, psi, t, x0, y0: as in :func:`min_norm_outer_solution`.
      filt: ``lambda -> g(lambda)``, e.g. ``functools.partial(spectral.neumann_filter,
        steps=K, lr=alpha)``; must be >= 0 on the eigenvalues of ``Phi^T Phi``.
      rtol: pinv cut-off.

    Returns:
      ``(x_inf, y_inf)``: the outer limit and the cold-start inner solution there.

    Example:
      >>> import functools, jax.numpy as jnp
      >>> from bilevel_lib import spectral
      >>> phi, psi = jnp.diag(jnp.array([1.0, 2.0])), jnp.array([[1.0, 1.0]])
      >>> args = (phi, psi, jnp.array([1.0]), jnp.zeros(2))
      >>> x, _ = filtered_outer_solution(*args, spectral.pinv_filter)
      >>> [round(float(v), 5) for v in x]
      [0.8, 0.4]
      >>> damped = functools.partial(spectral.damped_filter, eps=1.0)   # P = diag(1/2, 4/5)
      >>> x, _ = filtered_outer_solution(*args, damped)
      >>> [round(float(v), 5) for v in x]                                 # (5/7, 4/7)
      [0.71429, 0.57143]
    """
    phi, psi, t, x0 = _check_family(phi, psi, t, x0, "x0")
    _checks.check_callable(filt, "filt")
    y0 = jnp.zeros(phi.shape[1], phi.dtype) if y0 is None else jnp.asarray(y0)
    if y0.shape != (phi.shape[1],):
        raise ValueError(f"`y0` must have shape ({phi.shape[1]},); got {y0.shape}.")
    lam, vecs = jnp.linalg.eigh(phi.T @ phi)
    phi_v = phi @ vecs
    p = (phi_v * filt(lam)) @ phi_v.T
    mu, u = jnp.linalg.eigh(0.5 * (p + p.T))
    if _checks.is_concrete(mu):
        scale = float(jnp.max(jnp.abs(mu)))
        if float(jnp.min(mu)) < -jnp.sqrt(jnp.finfo(mu.dtype).eps) * max(scale, 1e-300):
            raise ValueError(
                "`filt` must be >= 0 on the eigenvalues of Phi^T Phi (a negative filter value "
                "makes outer gradient descent diverge; e.g. a Neumann step lr >= 2/lambda_max)."
            )
    root = (u * jnp.sqrt(jnp.clip(mu, 0.0))) @ u.T
    phi_pinv = _pinv(phi, rtol)
    m = psi @ phi_pinv
    t_eff = t - psi @ (y0 - phi_pinv @ (phi @ y0))
    x_inf = x0 + root @ (_pinv(m @ root, rtol) @ (t_eff - m @ x0))
    y_inf = y0 + phi_pinv @ (x_inf - phi @ y0)
    return x_inf, y_inf


def least_squares_objectives(phi: ArrayLike, psi: ArrayLike, t: ArrayLike
                             ) -> tuple[Callable[..., Array], Callable[..., Array]]:
    r"""The linear least-squares bilevel problem as ``(inner, outer)`` callables.

    .. math:: f(x, y) = \tfrac12 |\Phi y - x|^2,\qquad F(x, y) = \tfrac12 |\Psi y - t|^2

    Rows of ``Phi`` are the features of ``m`` learned points whose targets are the outer
    parameters ``x``; rows of ``Psi`` those of ``p`` original points with targets ``t``. Its
    closed forms are :func:`min_norm_outer_solution`, :func:`filtered_outer_solution`,
    :func:`optimistic_value` and :func:`pessimistic_value`.

    Args:
      phi: (m, n); psi: (p, n); t: (p,).

    Returns:
      ``(inner, outer)`` with the signature ``fn(x, y) -> scalar`` of :mod:`bilevel_lib.blo`.

    Example:
      >>> import jax.numpy as jnp
      >>> inner, outer = least_squares_objectives(jnp.eye(2), jnp.ones((1, 2)), jnp.zeros(1))
      >>> float(inner(jnp.ones(2), jnp.zeros(2))), float(outer(None, jnp.ones(2)))
      (1.0, 2.0)
    """
    phi, psi, t = map(jnp.asarray, (phi, psi, t))
    if phi.ndim != 2 or psi.ndim != 2 or phi.shape[1] != psi.shape[1]:
        raise ValueError(
            f"`phi` (m, n) and `psi` (p, n) must share n; got {phi.shape} and {psi.shape}."
        )
    if t.shape != (psi.shape[0],):
        raise ValueError(f"`t` must have shape ({psi.shape[0]},); got {t.shape}.")

    def inner(x, y):
        r = phi @ y - x
        return 0.5 * jnp.vdot(r, r)

    def outer(x, y):
        del x
        r = psi @ y - t
        return 0.5 * jnp.vdot(r, r)

    return inner, outer


def random_least_squares(seed: int, m: int, n: int, p: int, *,
                         spectrum: tuple[float, float] = (1.0, 2.0),
                         null_part: bool = True) -> tuple[Array, Array, Array]:
    r"""A random linear least-squares bilevel problem with prescribed singular values.

    ``Phi = U_r diag(s) V_r^T`` (rank ``r = min(m, n)``, random orthonormal ``U_r``, ``V_r``)
    and ``Psi = C diag(s) V_r^T + D V_0^T`` with ``C`` (p, r) and ``V_0`` a basis of
    ``null(Phi)``, so that ``M = Psi Phi^+ = C U_r^T``. The singular values of ``Phi`` and of
    ``C`` (hence of ``M``) are drawn uniformly in ``spectrum``, with the two ends pinned when
    there are at least two:
    the inner curvature ``Phi Phi^T`` and the cold-start outer curvature ``M^T M`` then have
    nonzero eigenvalues in ``[lo^2, hi^2]``, so gradient descent with step
    ``2 / (lo^2 + hi^2)`` contracts by ``(hi^2 - lo^2) / (hi^2 + lo^2)`` per step on both
    levels. ``D`` is Gaussian (``null_part=True``) or zero, in which case ``row(Psi)`` lies in
    ``row(Phi)`` and the outer loss ignores the inner null space. ``t`` is standard normal.

    Args:
      seed: integer seed (NumPy ``default_rng``; the draw is platform independent).
      m, n, p: learned points, inner parameters, original points.
      spectrum: ``(lo, hi)`` with ``0 < lo <= hi``.
      null_part: give ``Psi`` a component in ``null(Phi)``.

    Returns:
      ``(phi, psi, t)`` as JAX arrays of the default float dtype.

    Example:
      >>> import jax.numpy as jnp
      >>> phi, psi, t = random_least_squares(0, 3, 7, 2)
      >>> s = jnp.linalg.svd(phi, compute_uv=False)
      >>> round(float(s[0]), 5), round(float(s[-1]), 5)
      (2.0, 1.0)
      >>> m_mat = psi @ jnp.linalg.pinv(phi)
      >>> [round(float(v), 5) for v in jnp.linalg.svd(m_mat, compute_uv=False)]
      [2.0, 1.0]
    """
    for name, val in (("m", m), ("n", n), ("p", p)):
        _checks.check_steps(val, name, allow_zero=False)
    lo, hi = (float(v) for v in spectrum)
    if not 0.0 < lo <= hi:
        raise ValueError(f"`spectrum` must be (lo, hi) with 0 < lo <= hi; got {spectrum!r}.")
    rng = np.random.default_rng(seed)

    def orthogonal(k):
        q, r = np.linalg.qr(rng.standard_normal((k, k)))
        return q * np.sign(np.diag(r))

    def singular_values(k):
        s = np.sort(rng.uniform(lo, hi, k))[::-1]
        if k >= 2:
            s[0], s[-1] = hi, lo
        return s

    r = min(m, n)
    u, v = orthogonal(m), orthogonal(n)
    s_phi = singular_values(r)
    phi = (u[:, :r] * s_phi) @ v[:, :r].T
    k = min(p, r)
    c = (orthogonal(p)[:, :k] * singular_values(k)) @ orthogonal(r)[:, :k].T
    psi = (c * s_phi) @ v[:, :r].T
    if null_part and n > r:
        psi = psi + rng.standard_normal((p, n - r)) @ v[:, r:].T
    t = rng.standard_normal(p)
    return tuple(jnp.asarray(a, dtype=jnp.result_type(float)) for a in (phi, psi, t))
