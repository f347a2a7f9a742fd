r"""Hypergradient approximations as spectral filters (paper Sec. 3.3.1, Fig. 6).

Write the inner Hessian as ``H = U diag(lambda) U^T``. Every estimator in
:mod:`bilevel_lib.hypergrad` except CG replaces ``1/lambda`` by a fixed filter ``g(lambda)``:

=================  =============================================  ====================
approximation      ``g(lambda)`` for ``lambda > 0``               ``g(0)``
=================  =============================================  ====================
pseudoinverse      ``1/lambda``                                   ``0``
K-term Neumann     ``(1 - (1 - alpha lambda)^K) / lambda``        ``alpha K``
damped             ``1/(lambda + eps)``                           ``1/eps``
=================  =============================================  ====================

Matching the two bounded filters at ``lambda = 0`` gives ``eps = 1/(alpha K)``
(:func:`matching_eps`). CG is a *Krylov* filter: its polynomial depends on the right-hand side.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree
from jax.typing import ArrayLike

from . import _checks, linalg

__all__ = [
    "pinv_filter",
    "neumann_filter",
    "damped_filter",
    "matching_eps",
    "apply_filter",
    "max_eigenvalue",
    "effective_filter",
    "cg_filter",
    "cg_direction_errors",
]


def pinv_filter(lam: ArrayLike, *, rtol: float | None = None) -> jax.Array:
    r"""The pseudoinverse filter: ``1/lambda`` above the zero threshold, else 0.

    Zero means ``|lambda| <= rtol * max|lambda|``, by default the library's one rule
    :func:`bilevel_lib.linalg.zero_threshold` (``10 * eps`` of the dtype: 2.2e-15 in float64,
    1.2e-6 in float32).

    Example:
      >>> import jax.numpy as jnp
      >>> pinv_filter(jnp.array([0.0, 0.5, 2.0])).tolist()
      [0.0, 2.0, 0.5]
    """
    lam = jnp.asarray(lam)
    keep = jnp.abs(lam) > linalg.zero_threshold(lam, rtol=rtol)
    return jnp.where(keep, 1.0 / jnp.where(keep, lam, 1.0), 0.0)


def neumann_filter(lam: ArrayLike, *, steps: ArrayLike, lr: ArrayLike) -> jax.Array:
    r"""The K-term Neumann filter ``alpha sum_{j<K} (1 - alpha lambda)^j``.

    .. math:: g_K(\lambda) = \frac{1 - (1 - \alpha\lambda)^K}{\lambda}
        = -\frac{\operatorname{expm1}(K \log1p(-\alpha\lambda))}{\lambda},\qquad
        g_K(0) = \alpha K

    Computed as the ratio in the ``expm1``/``log1p`` form where ``alpha lambda < 1``: the
    plain ``1 - (1 - alpha lambda)^K`` cancels catastrophically for small ``alpha lambda``
    (in float32 ``1 - 3e-8`` rounds to 1, and ``lambda = 3e-8, alpha = 1, K = 10`` gave 19.87
    instead of 10). ``lambda = 0`` takes the limit ``alpha K``; where ``alpha lambda >= 1``
    (no cancellation) the plain ratio is used. ``steps`` may be an array (broadcast against
    ``lam``), so a sweep over K is one call.

    Example:
      >>> import jax.numpy as jnp
      >>> neumann_filter(jnp.array([0.0, 1.0]), steps=3, lr=0.5).round(6).tolist()
      [1.5, 0.875]
    """
    lam = jnp.asarray(lam)
    _checks.check_positive(lr, "lr")
    steps = jnp.asarray(steps)
    if _checks.is_concrete(steps) and bool(jnp.any(steps < 0)):
        raise ValueError(f"`steps` must be >= 0; got {steps}.")
    dtype = jnp.result_type(lam.dtype, jnp.float32)
    lam = lam.astype(dtype)
    k = steps.astype(dtype)
    x = lr * lam
    at_zero = lam == 0
    safe_lam = jnp.where(at_zero, 1.0, lam)
    below = x < 1
    # expm1/log1p where log1p(-x) is defined; the where keeps NaN out of both branches.
    stable = -jnp.expm1(k * jnp.log1p(-jnp.where(below, x, 0.0))) / safe_lam
    plain = (1.0 - (1.0 - jnp.where(below, 1.0, x)) ** k) / safe_lam
    return jnp.where(at_zero, lr * k, jnp.where(below, stable, plain))


def damped_filter(lam: ArrayLike, *, eps: ArrayLike) -> jax.Array:
    r"""The damped filter ``1 / (lambda + eps)``.

    Example:
      >>> import jax.numpy as jnp
      >>> damped_filter(jnp.array([0.0, 1.0]), eps=1.0).tolist()
      [1.0, 0.5]
    """
    _checks.check_positive(eps, "eps")
    return 1.0 / (jnp.asarray(lam) + eps)


def matching_eps(*, steps: ArrayLike, lr: ArrayLike) -> jax.Array:
    r"""The damping whose filter equals the K-term Neumann one at ``lambda = 0``: ``1/(alpha K)``.

    Example:
      >>> matching_eps(steps=10, lr=0.1)
      1.0
    """
    _checks.check_positive(lr, "lr")
    _checks.check_positive(steps, "steps")
    return 1.0 / (lr * steps)


def apply_filter(hess: ArrayLike, rhs: ArrayLike, filt: Callable) -> jax.Array:
    r"""``U diag(filt(lambda)) U^T rhs`` for symmetric ``hess = U diag(lambda) U^T``.

    Args:
      hess: symmetric (n, n) matrix.
      rhs: (n,) or (n, k).
      filt: ``lambda -> g(lambda)``, e.g. ``functools.partial(neumann_filter, steps=5, lr=0.1)``.

    Example:
      >>> import jax.numpy as jnp
      >>> apply_filter(jnp.diag(jnp.array([2.0, 0.0])), jnp.ones(2), pinv_filter).tolist()
      [0.5, 0.0]
    """
    hess = jnp.asarray(hess)
    if hess.ndim != 2 or hess.shape[0] != hess.shape[1]:
        raise ValueError(f"`hess` must be a square matrix; got shape {hess.shape}.")
    lam, vecs = jnp.linalg.eigh(0.5 * (hess + hess.T))
    g = filt(lam)
    coeffs = vecs.T @ rhs
    return vecs @ (g[:, None] * coeffs if coeffs.ndim == 2 else g * coeffs)


def max_eigenvalue(inner: Callable, x: Any, y: Any, *, steps: int | None = None, seed: int = 0,
                   iters: int | None = None) -> jax.Array:
    r"""Largest eigenvalue of the inner Hessian by power iteration with Hessian-vector products.

    Use it to set step sizes: Neumann / unrolling / gradient descent converge for
    ``lr < 2 / max_eigenvalue`` (assuming a PSD Hessian).

    Args:
      inner: ``inner(x, y) -> scalar``; x, y: where the Hessian is taken.
      steps: power iterations (static int; default 100).
      seed: seed of the random start vector.
      iters: deprecated name of ``steps``.

    Example:
      >>> import jax.numpy as jnp
      >>> inner = lambda x, y: 0.5 * jnp.sum(jnp.array([1.0, 3.0]) * y ** 2)
      >>> round(float(max_eigenvalue(inner, jnp.zeros(1), jnp.zeros(2))), 4)
      3.0
    """
    _checks.check_objective(inner, "inner", x, y)
    steps = _checks.renamed(steps, iters, "steps", "iters", "max_eigenvalue")
    steps = _checks.check_steps(100 if steps is None else steps, "steps", allow_zero=False)
    y_flat, unravel = ravel_pytree(y)

    def grad_y(yy):
        return ravel_pytree(jax.grad(inner, argnums=1)(x, unravel(yy)))[0]

    hvp = linalg.hvp_operator(grad_y, y_flat)  # one linearization for every iteration

    v = jax.random.normal(jax.random.PRNGKey(seed), y_flat.shape, y_flat.dtype)
    v = v / jnp.linalg.norm(v)

    def body(_, v):
        w = hvp(v)
        return w / jnp.maximum(jnp.linalg.norm(w), jnp.finfo(w.dtype).tiny)

    v = jax.lax.fori_loop(0, steps, body, v)
    return jnp.vdot(v, hvp(v))


def effective_filter(hess: ArrayLike, rhs: ArrayLike, solution: ArrayLike, *,
                     rtol: float = 1e-10):
    r"""The filter a linear solve applied, read off in the eigenbasis of ``hess``.

    Any approximate solve ``v`` of ``H v = b`` can be written coordinate-wise in the
    eigenbasis ``H = U diag(lambda) U^T``; its *effective filter* is the ratio

    .. math:: g_i = \frac{(U^\top v)_i}{(U^\top b)_i},

    which equals ``g(lambda_i)`` for a fixed spectral filter (Neumann, damped, pinv) and, for
    conjugate gradient, the values of its right-hand-side-dependent polynomial (see
    :func:`cg_filter`). Ratios are only meaningful where ``b`` has weight:
    ``|(U^T b)_i| > rtol * max_j |(U^T b)_j|``; elsewhere ``g`` is set to 0 and ``valid`` is False.

    Args:
      hess: symmetric (n, n) matrix.
      rhs: the right-hand side ``b``, shape (n,).
      solution: the approximate solution ``v``, shape (n,).
      rtol: relative threshold on ``|(U^T b)_i|`` below which a ratio is not formed.

    Returns:
      ``(lam, g, valid)``: eigenvalues (ascending), ratios, and a boolean mask, each (n,).

    Example:
      >>> import jax.numpy as jnp
      >>> H = jnp.diag(jnp.array([1.0, 4.0]))
      >>> b = jnp.array([1.0, 1.0])
      >>> lam, g, valid = effective_filter(H, b, 0.5 * b)    # one Neumann term, lr = 0.5
      >>> lam.tolist(), g.tolist(), valid.tolist()
      ([1.0, 4.0], [0.5, 0.5], [True, True])
    """
    hess, rhs, solution = jnp.asarray(hess), jnp.asarray(rhs), jnp.asarray(solution)
    if hess.ndim != 2 or hess.shape[0] != hess.shape[1]:
        raise ValueError(f"`hess` must be a square matrix; got shape {hess.shape}.")
    n = hess.shape[0]
    if rhs.shape != (n,):
        raise ValueError(f"`rhs` must have shape ({n},); got {rhs.shape}.")
    if solution.shape != (n,):
        raise ValueError(f"`solution` must have shape ({n},); got {solution.shape}.")
    _checks.check_positive(rtol, "rtol")
    lam, vecs = jnp.linalg.eigh(0.5 * (hess + hess.T))
    c_b, c_v = vecs.T @ rhs, vecs.T @ solution
    valid = jnp.abs(c_b) > rtol * jnp.max(jnp.abs(c_b))
    g = jnp.where(valid, c_v / jnp.where(valid, c_b, 1.0), 0.0)
    return lam, g, valid


def cg_filter(lam: ArrayLike, coeffs: ArrayLike, at: ArrayLike | None = None, *, steps,
              max_steps: int | None = None, guard: float | None = None) -> jax.Array:
    r"""The polynomial filter of ``steps`` conjugate-gradient iterations, evaluated at ``at``.

    CG from ``v = 0`` on ``H v = b`` returns ``v_K = p_K(H) b`` for a polynomial ``p_K`` of
    degree ``K - 1`` (a Krylov method; Hestenes & Stiefel, 1952). Unlike the Neumann
    polynomial, ``p_K`` is not fixed in advance: it is chosen from the spectral measure
    ``sum_i c_i^2 delta(lambda - lambda_i)`` of the right-hand side, ``c = U^T b``. For an
    invertible ``H`` it minimizes the ``H``-norm error over all degree ``K - 1`` polynomials, so
    after as many steps as ``b`` has distinct eigenvalues ``p_K(lambda_i) = 1/lambda_i``.

    CG is invariant under an orthogonal change of basis, so this runs
    :func:`bilevel_lib.hypergrad.conjugate_gradient` (with its breakdown guard) on the diagonal
    system ``diag(lam) z = coeffs``. To read ``p_K`` at arbitrary points ``at`` (a continuous
    curve, e.g. for a plot) each point joins the system as an extra eigen-direction whose
    right-hand-side weight ``delta = eps**2`` (a power of two) is far too small to change any of
    CG's scalars; its solution component divided by ``delta`` is exactly ``p_K`` there.

    Args:
      lam: eigenvalues of ``H`` (n,), e.g. from ``jnp.linalg.eigh``.
      coeffs: ``U^T b`` (n,): the right-hand side in the eigenbasis; zero weights are allowed.
      at: points (m,) where ``p_K`` is evaluated; default ``lam``.
      steps: CG iterations K (Python int; or traced with static ``max_steps``, so a sweep over
        K is one ``vmap``).
      max_steps: optional static bound enabling a traced ``steps``.
      guard: breakdown threshold, as in :func:`bilevel_lib.hypergrad.conjugate_gradient`.

    Returns:
      ``p_K(at)``, shape (m,).

    Example:
      >>> import jax.numpy as jnp
      >>> lam, c = jnp.array([1.0, 2.0]), jnp.array([1.0, 1.0])
      >>> # One step: v = (b.b / b.Hb) b, a constant filter 2/3 everywhere.
      >>> [round(g, 4) for g in cg_filter(lam, c, jnp.array([0.0, 5.0]), steps=1).tolist()]
      [0.6667, 0.6667]
      >>> [round(g, 4) for g in cg_filter(lam, c, steps=2).tolist()]   # 2 eigenvalues: 1/lambda
      [1.0, 0.5]
    """
    lam, coeffs = jnp.asarray(lam), jnp.asarray(coeffs)
    if lam.ndim != 1:
        raise ValueError(f"`lam` must be a 1-D array of eigenvalues; got shape {lam.shape}.")
    if coeffs.shape != lam.shape:
        raise ValueError(f"`coeffs` must have the shape of `lam` {lam.shape}; got {coeffs.shape}.")
    at = lam if at is None else jnp.asarray(at)
    if at.ndim != 1:
        raise ValueError(f"`at` must be a 1-D array of points; got shape {at.shape}.")
    dtype = jnp.result_type(lam.dtype, coeffs.dtype, at.dtype, jnp.float32)
    delta = jnp.asarray(jnp.finfo(dtype).eps ** 2, dtype)
    diag = jnp.concatenate([lam.astype(dtype), at.astype(dtype)])
    rhs = jnp.concatenate([coeffs.astype(dtype), jnp.full(at.shape, delta, dtype)])
    # Local import: hypergrad does not import spectral, so there is no cycle either way.
    from .hypergrad import conjugate_gradient

    z = conjugate_gradient(lambda v: diag * v, rhs, steps=steps, max_steps=max_steps,
                           guard=guard)
    return z[lam.shape[0]:] / delta


def cg_direction_errors(hess: ArrayLike, rhs: ArrayLike, *, max_steps: int,
                        guard: float | None = None, rtol: float | None = None):
    r"""The error of every CG iterate ``K = 0, ..., max_steps`` in each eigendirection of ``hess``.

    With ``H = U diag(lambda) U^T`` (columns ``u_i``), ``v^* = H^+ b`` and ``v_K`` the ``K``-th
    iterate of :func:`bilevel_lib.linalg.cg_solve` from ``v_0 = 0`` (with its breakdown guard),

    .. math:: e_{K,i} = \lvert u_i^\top (v_K - v^*) \rvert
        = \lvert 1 - \lambda_i\, p_K(\lambda_i) \rvert\, \frac{\lvert u_i^\top b \rvert}
        {\lambda_i} \quad (\lambda_i > 0),

    where ``p_K`` is CG's polynomial (:func:`cg_filter`). Dividing by the exact component
    ``|u_i^T v^*|`` gives the fraction of the exact answer that CG still misses in direction
    ``i``: it shows which curvature directions CG resolves first. In a null direction
    (``lambda_i = 0``) the exact component is 0 and ``e_{K,i} = |u_i^T v_K|`` is what CG puts
    there (nonzero only when ``b`` has a null-space component). The sweep over ``K`` is one
    ``vmap`` of the library's CG with a traced step count.

    Args:
      hess: symmetric PSD (n, n) matrix.
      rhs: the right-hand side ``b``, shape (n,).
      max_steps: the largest iteration count ``K`` (static int >= 1).
      guard: CG's breakdown threshold, as in :func:`bilevel_lib.linalg.cg_solve`.
      rtol: zero threshold for the eigenvalues, as in :func:`pinv_filter`.

    Returns:
      ``(lam, errors, exact)``: the eigenvalues (ascending, (n,)), ``errors`` of shape
      ``(max_steps + 1, n)`` with row ``K`` the errors ``e_{K,i}`` (row 0 is ``v_0 = 0``), and
      ``exact = |U^T H^+ b|`` (n,).

    Example:
      >>> import jax.numpy as jnp
      >>> H, b = jnp.diag(jnp.array([1.0, 4.0])), jnp.array([1.0, 1.0])
      >>> lam, err, exact = cg_direction_errors(H, b, max_steps=2)
      >>> exact.tolist()                     # H^{-1} b = (1, 1/4)
      [1.0, 0.25]
      >>> # One step v_1 = (b.b / b.Hb) b = 0.4 b; two steps (two eigenvalues) are exact.
      >>> [[round(e, 4) for e in row] for row in err.tolist()]
      [[1.0, 0.25], [0.6, 0.15], [0.0, 0.0]]
    """
    hess, rhs = jnp.asarray(hess), jnp.asarray(rhs)
    if hess.ndim != 2 or hess.shape[0] != hess.shape[1]:
        raise ValueError(f"`hess` must be a square matrix; got shape {hess.shape}.")
    n = hess.shape[0]
    if rhs.shape != (n,):
        raise ValueError(f"`rhs` must have shape ({n},); got {rhs.shape}.")
    max_steps = _checks.check_steps(max_steps, "max_steps", allow_zero=False)
    lam, vecs = jnp.linalg.eigh(0.5 * (hess + hess.T))
    exact = pinv_filter(lam, rtol=rtol) * (vecs.T @ rhs)

    def iterate(k):
        return linalg.cg_solve(lambda v: hess @ v, rhs, steps=k, max_steps=max_steps,
                               guard=guard)[0]

    iterates = jax.vmap(iterate)(jnp.arange(max_steps + 1))
    return lam, jnp.abs(iterates @ vecs - exact), jnp.abs(exact)
