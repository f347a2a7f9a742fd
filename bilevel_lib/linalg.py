r"""The library's core linear algebra: one HVP, one zero threshold, and linear solvers.

Every hypergradient estimator solves (or approximates) ``H v = b`` with the inner Hessian
``H`` reached only through Hessian-vector products. This module holds the pieces they share:

* :func:`hvp` -- the Hessian-vector product (forward-over-reverse);
* :func:`zero_threshold` -- the one rule deciding which eigenvalues count as zero;
* solvers with one protocol, modeled on ``jaxopt.linear_solve`` and lineax's ``Solution``:
  ``solve(matvec, b, *, ..., init=None) -> (v, SolveInfo)`` -- :func:`cg_solve`,
  :func:`damped_solve` (CG on ``A + eps I``), :func:`lsqr_solve` (minimum norm),
  :func:`dense_solve` (``eigh``), :func:`damped_dense_solve`, :func:`neumann_solve`;
* :func:`raise_if_failed` and :func:`guard` -- raise on an unusable solve, eagerly *and*
  under ``jax.jit`` (``guard`` is what every estimator's default ``throw=True`` calls);
  :func:`check_solution` -- the same test as a ``checkify`` check.

Every solver returns one typed diagnostics record, :class:`SolveInfo`, with the same fields
whatever the solver (NaN, ``False`` or ``None`` where a number does not apply), so the
diagnostics of different solvers share one ``jax.tree_util.tree_structure``: they go through
``lax.cond``, stack into traces and ``vmap``. ``info.residual`` is the relative *true* residual
``|A v - b| / |b|``, recomputed with one extra ``matvec`` after the loop (never a running
estimate), ``info.steps`` the iterations actually run (int32) and ``info.status`` an int32 index
into :data:`STATUS`. All solvers run under ``jax.jit`` and ``jax.vmap`` (``lax.scan`` /
``lax.while_loop``) in float32 and float64.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.experimental import checkify
from jax.typing import ArrayLike

from . import _checks

__all__ = [
    "STATUS",
    "NOISE_FACTOR",
    "MAX_GROWTH",
    "SolveInfo",
    "solve_info",
    "status_name",
    "default_tol",
    "relative_residual",
    "hvp",
    "zero_threshold",
    "pinv_eigh",
    "dense_solve",
    "damped_dense_solve",
    "neumann_solve",
    "cg_solve",
    "damped_solve",
    "lsqr_solve",
    "minres_solve",
    "raise_if_failed",
    "guard",
    "failure_message",
    "check_solution",
]

Array = jax.Array
Matvec = Callable[[Array], Array]

STATUS = ("converged", "max_steps", "breakdown", "negative_curvature", "diverged")
"""Names of the ``info.status`` codes, indexed by code.

* ``converged``: the stopping test on the true residual holds;
* ``max_steps``: the iteration budget ran out first (normal for a fixed ``steps``);
* ``breakdown``: a search direction had negligible curvature ``|p^T A p|`` against the
  operator's scale; the iterate is frozen there (CG on a singular inconsistent system);
* ``negative_curvature``: a direction with ``p^T A p <= 0`` was met where the operator must be
  positive definite (:func:`damped_solve`, :func:`damped_dense_solve`: ``H + eps I`` is
  indefinite). Plain :func:`cg_solve` steps through negative curvature and only sets the
  ``info.negative_curvature`` flag;
* ``diverged``: the iterates grew (Neumann series outside its radius) or are not finite.

``negative_curvature`` and ``diverged`` are *failures* (:func:`raise_if_failed` raises on
them); ``max_steps`` is not: a truncated solve is a legitimate answer.
"""

CONVERGED, MAX_STEPS, BREAKDOWN, NEGATIVE_CURVATURE, DIVERGED = range(len(STATUS))

FAILURES = (NEGATIVE_CURVATURE, DIVERGED)

NOISE_FACTOR = 10.0
"""Default relative zero threshold, in units of the dtype's machine epsilon."""

MAX_GROWTH = 10.0
"""A Neumann series (or unroll) whose residual grew by more than this factor has diverged."""


class SolveInfo(NamedTuple):
    """Diagnostics of a linear solve: one schema for every solver and every estimator.

    A ``NamedTuple`` (so a pytree): the diagnostics of any two solvers have the same
    ``jax.tree_util.tree_structure`` (for equal ``solution`` structure), pass through
    ``lax.cond``/``lax.scan`` and stack with ``jax.tree.map(jnp.stack, *infos)``. Fields that do
    not apply to a solver hold NaN (floats), ``False`` or ``None``. ``info["residual"]`` is
    accepted as a synonym of ``info.residual`` (the v2 dict interface).

    Attributes:
      status: int32 code indexing :data:`STATUS` (:func:`status_name` names it).
      residual: true relative residual ``|A v - b| / |b|`` (one extra ``matvec``).
      steps: iterations actually run (int32; 0 for the dense solves).
      normal_residual: ``|A (A v - b)| / |A b|`` (:func:`lsqr_solve`; NaN elsewhere).
      min_curvature: smallest ``p^T A p / p^T p`` seen -- CG's directions, or the smallest
        eigenvalue of ``A`` for the dense solves (NaN for Neumann and LSQR).
      negative_curvature: bool, a direction with ``p^T A p < 0`` was met (``<= 0`` where
        ``A`` must be positive definite).
      growth: ``|(I - lr A)^K b| / |b|`` of the Neumann series (NaN elsewhere).
      solution: ``None`` from a solver (the solution is returned beside the info); an
        estimator puts ``v`` there as a pytree like ``y`` (a warm start for the next solve).
    """

    status: Any
    residual: Any
    steps: Any
    normal_residual: Any
    min_curvature: Any
    negative_curvature: Any
    growth: Any
    solution: Any = None

    def __getitem__(self, key):
        if isinstance(key, str):
            try:
                return getattr(self, key)
            except AttributeError:
                raise KeyError(key) from None
        return tuple.__getitem__(self, key)


def solve_info(status: ArrayLike, residual: ArrayLike, steps: ArrayLike, *,
               normal_residual: ArrayLike | None = None,
               min_curvature: ArrayLike | None = None,
               negative_curvature: ArrayLike = False, growth: ArrayLike | None = None,
               solution: Any = None, dtype=None) -> SolveInfo:
    """A :class:`SolveInfo` with the fixed dtypes (NaN for the numbers not given).

    The one constructor every solver uses, and the one a custom solver for
    :func:`bilevel_lib.hypergrad.implicit` should use.

    Args:
      status: status code (int, see :data:`STATUS`).
      residual: relative true residual.
      steps: iterations run.
      normal_residual, min_curvature, growth: optional numbers (NaN when not given).
      negative_curvature: bool flag.
      solution: optional solution pytree.
      dtype: float dtype of the numbers (default: that of ``residual``).

    Returns:
      A :class:`SolveInfo`.

    Example:
      >>> info = solve_info(0, 1e-7, 3)
      >>> status_name(info.status), int(info["steps"]), bool(jnp.isnan(info.growth))
      ('converged', 3, True)
    """
    residual = jnp.asarray(residual)
    if dtype is None:
        dtype = jnp.result_type(residual.dtype, jnp.float32)

    def num(value):
        return jnp.asarray(jnp.nan if value is None else value, dtype)

    return SolveInfo(status=jnp.asarray(status, jnp.int32), residual=num(residual),
                     steps=jnp.asarray(steps, jnp.int32), normal_residual=num(normal_residual),
                     min_curvature=num(min_curvature),
                     negative_curvature=jnp.asarray(negative_curvature, bool),
                     growth=num(growth), solution=solution)

# A kept eigenvalue this close above the cutoff may still be rounding noise: warn.
_AMBIGUOUS_FACTOR = 10.0


def status_name(code: ArrayLike):
    """Name(s) of status code(s): a ``str`` for a scalar, else a nested list.

    Example:
      >>> import jax.numpy as jnp
      >>> status_name(0), status_name(jnp.array([1, 3]))
      ('converged', ['max_steps', 'negative_curvature'])
    """
    arr = np.asarray(code)
    if arr.ndim == 0:
        return STATUS[int(arr)]
    return [status_name(c) for c in arr]


# ---------------------------------------------------------------------------------------------
# Hessian-vector product
# ---------------------------------------------------------------------------------------------


def hvp(grad_fn: Callable[[Any], Any], y: Any, v: Any) -> Any:
    r"""Hessian-vector product ``d/dt grad_fn(y + t v)`` at ``t = 0`` (forward-over-reverse).

    .. math:: H v = \partial_t \nabla f(y + t v) |_{t=0}

    One ``jvp`` of the gradient: about the cost of two gradients and the memory of one
    reverse pass, the cheapest of the three autodiff modes (see :mod:`bilevel_lib.profiling`).

    Args:
      grad_fn: ``y -> grad f(y)`` (e.g. ``jax.grad(f)``), same structure as ``y``.
      y: the point (array or pytree).
      v: the direction, same structure as ``y``.

    Returns:
      ``H v``, a pytree like ``y``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> f = lambda y: jnp.sum(y ** 3) / 6.0              # Hessian diag(y)
      >>> hvp(jax.grad(f), jnp.array([1.0, 2.0]), jnp.ones(2)).tolist()
      [1.0, 2.0]
    """
    return jax.jvp(grad_fn, (y,), (v,))[1]


def hvp_operator(grad_fn: Callable[[Any], Any], y: Any) -> Callable[[Any], Any]:
    r"""``v -> H v`` at a fixed ``y``: :func:`hvp` with the gradient's forward pass done once.

    ``jax.linearize`` of ``grad_fn`` at ``y``: the primal computation (the model's forward and
    backward pass at ``y``) runs once, and each product replays only the tangent part. An
    iterative solver applies ``H`` many times at one point, so this is what it should be
    given: on the benchmark MLP a 20-step CG hypergradient takes about 0.6 the time of one
    that calls :func:`hvp` afresh at every step (``benchmarks/bench_jaxopt.py``). It keeps the
    linearization's residuals alive while the solver runs (about one reverse pass's memory).

    Args:
      grad_fn: ``y -> grad f(y)``, same structure as ``y``.
      y: the point.

    Returns:
      A linear function ``v -> H v`` (``v`` shaped like ``y``).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> f = lambda y: jnp.sum(y ** 3) / 6.0              # Hessian diag(y)
      >>> hess = hvp_operator(jax.grad(f), jnp.array([1.0, 2.0]))
      >>> hess(jnp.ones(2)).tolist(), hess(jnp.array([1.0, 0.0])).tolist()
      ([1.0, 2.0], [1.0, 0.0])
    """
    return jax.linearize(grad_fn, y)[1]


# ---------------------------------------------------------------------------------------------
# The zero threshold and the dense path
# ---------------------------------------------------------------------------------------------


def _machine_eps(dtype):
    return float(jnp.finfo(dtype).eps)


def default_tol(dtype) -> float:
    """The default ``"converged"`` tolerance of the iterative solvers for a dtype.

    ``1e-6`` in float32, ``1e-12`` in float64 (about ``8 eps`` and ``4500 eps``).

    Example:
      >>> default_tol(jnp.float32), default_tol(jnp.float64)
      (1e-06, 1e-12)
    """
    return 1e-6 if jnp.dtype(dtype) == jnp.float32 else 1e-12


def relative_residual(matvec: Matvec, v: ArrayLike, b: ArrayLike) -> Array:
    r"""The true relative residual ``|A v - b| / |b|`` (one ``matvec``; ``|A v|`` if ``b = 0``).

    Example:
      >>> round(float(relative_residual(lambda u: 2.0 * u, jnp.ones(2), jnp.array([2.0, 4.0]))), 6)
      0.447214
    """
    r = matvec(v) - b
    nb = jnp.linalg.norm(b)
    return jnp.linalg.norm(r) / jnp.where(nb > 0, nb, 1.0)


def zero_threshold(values: ArrayLike, *, rtol: float | None = None, dtype=None) -> Array:
    r"""Absolute cutoff below which eigenvalues (or singular values) count as zero.

    .. math:: \tau = r\, \max_i |\lambda_i|,\qquad r = 10\, \epsilon_{\text{dtype}}
        \ \text{by default}

    Why ``10 eps`` and not LAPACK's ``n eps``: a backward-stable ``eigh`` returns each
    eigenvalue of a symmetric ``H`` to ``O(eps |H|)``; measured on random rank-n/2 matrices
    (``Q diag Q^T`` and ``Phi^T Phi``), the zero eigenvalues come out at 0.6-1.1 ``eps |H|`` for
    n = 10-100 and 1.2-2.3 ``eps |H|`` for n = 1000, in float32 and float64 alike. ``10 eps``
    sits above that with a 4x margin at n = 1000, while ``n eps`` is 1.2e-4 relative in
    float32 at n = 1000 and drops real eigenvalues: an SPD ``H`` with condition number 1e4
    then loses its smallest eigenvalues and the solve is 59% off (with ``10 eps``: 0.02%).

    Args:
      values: eigenvalues or singular values (any shape; the max is over all of them).
      rtol: relative threshold overriding the default ``NOISE_FACTOR * eps``.
      dtype: dtype whose epsilon is used (default: that of ``values``).

    Returns:
      The scalar cutoff ``tau``; keep ``|lambda| > tau``.

    Example:
      >>> import jax.numpy as jnp
      >>> lam = jnp.array([3e-8, 1e-4, 1.0], jnp.float32)   # noise, small but real, large
      >>> (jnp.abs(lam) > zero_threshold(lam)).tolist()
      [False, True, True]
    """
    values = jnp.asarray(values)
    dtype = jnp.result_type(values.dtype, jnp.float32) if dtype is None else dtype
    rel = NOISE_FACTOR * _machine_eps(dtype) if rtol is None else rtol
    return rel * jnp.max(jnp.abs(values))


def _warn_if_ambiguous(lam, cutoff, dtype, what="eigenvalues"):
    """Eagerly warn when the threshold decision is not clear-cut (never under ``jit``)."""
    if not _checks.is_concrete((lam, cutoff)):
        return
    lam = np.abs(np.asarray(lam, np.float64))
    cutoff = float(cutoff)
    if lam.size == 0 or lam.max() == 0:
        return
    noise = NOISE_FACTOR * _machine_eps(dtype) * lam.max()
    dropped = lam[(lam <= cutoff) & (lam > noise)]
    if dropped.size:
        warnings.warn(
            f"{dropped.size} {what} up to {dropped.max():.3g} (relative "
            f"{dropped.max() / lam.max():.3g}) are treated as zero although they are above the "
            f"rounding-noise level {noise / lam.max():.3g} of {jnp.dtype(dtype).name}: `rtol` "
            f"is dropping real curvature.", stacklevel=3)
    near = lam[(lam > cutoff) & (lam <= _AMBIGUOUS_FACTOR * noise)]
    if near.size:
        warnings.warn(
            f"{near.size} {what} down to {near.min():.3g} (relative {near.min() / lam.max():.3g})"
            f" are kept but lie within {_AMBIGUOUS_FACTOR:g}x of the zero threshold: they may "
            f"be rounding noise, and their inverses dominate the result. Consider float64.",
            stacklevel=3)


def pinv_eigh(hess: ArrayLike, *, rtol: float | None = None):
    r"""Eigendecomposition of symmetric ``hess`` with pseudo-inverted eigenvalues.

    .. math:: H = U \operatorname{diag}(\lambda) U^\top,\qquad
        H^{+} = U \operatorname{diag}(\lambda^{+}) U^\top,\quad
        \lambda^{+}_i = 1/\lambda_i \text{ if } |\lambda_i| > \tau \text{ else } 0

    with ``tau`` from :func:`zero_threshold`. Warns (eagerly) on ambiguous eigenvalues.

    Args:
      hess: square matrix (symmetrized first).
      rtol: relative threshold (default ``NOISE_FACTOR * eps``).

    Returns:
      ``(lam, vecs, inv_lam)``.

    Example:
      >>> import jax.numpy as jnp
      >>> lam, vecs, inv = pinv_eigh(jnp.diag(jnp.array([2.0, 0.0])))
      >>> inv.tolist()
      [0.0, 0.5]
    """
    hess = jnp.asarray(hess)
    lam, vecs = jnp.linalg.eigh(0.5 * (hess + hess.T))
    cutoff = zero_threshold(lam, rtol=rtol)
    _warn_if_ambiguous(lam, cutoff, lam.dtype)
    keep = jnp.abs(lam) > cutoff
    inv = jnp.where(keep, 1.0 / jnp.where(keep, lam, 1.0), 0.0)
    return lam, vecs, inv


def _dense_matrix(matvec, b, matrix):
    n = b.shape[0]
    return jax.vmap(matvec)(jnp.eye(n, dtype=b.dtype)).T if matrix is None else matrix


def dense_solve(matvec: Matvec, b: ArrayLike, *, rtol: float | None = None,
                matrix: ArrayLike | None = None,
                init: ArrayLike | None = None) -> tuple[Array, SolveInfo]:
    r"""Minimum-norm least-squares solution ``v = A^+ b`` by a dense eigendecomposition.

    The matrix is formed as ``vmap(matvec)(I)`` (n matrix-vector products) unless given;
    eigenvalues at or below :func:`zero_threshold` count as zero. For an inconsistent ``b``
    (a part outside ``range(A)``) ``info.residual`` is that part's relative norm: the
    least-squares residual, not an error.

    Args:
      matvec: ``v -> A v`` for symmetric ``A`` on flat vectors.
      b: right-hand side (1-D).
      rtol: relative zero threshold (default ``NOISE_FACTOR`` machine epsilons).
      matrix: optional dense ``A`` (skips forming it).
      init: ignored (accepted for the solver protocol).

    Returns:
      ``(v, info)``; ``info.min_curvature`` is the smallest eigenvalue of ``A``.

    Example:
      >>> import jax.numpy as jnp
      >>> A = jnp.diag(jnp.array([2.0, 0.0]))
      >>> v, info = dense_solve(lambda u: A @ u, jnp.array([2.0, 1.0]))
      >>> v.tolist(), status_name(info.status), float(info.min_curvature)
      ([1.0, 0.0], 'converged', 0.0)
    """
    del init
    b = jnp.asarray(b)
    a = _dense_matrix(matvec, b, matrix)
    lam, vecs, inv = pinv_eigh(a, rtol=rtol)
    v = vecs @ (inv * (vecs.T @ b))
    res = relative_residual(lambda u: a @ u, v, b)
    status = jnp.where(jnp.all(jnp.isfinite(v)), CONVERGED, DIVERGED)
    lam_min = jnp.min(lam)
    return v, solve_info(status, res, 0, min_curvature=lam_min,
                         negative_curvature=lam_min < 0, dtype=b.dtype)


def damped_dense_solve(matvec: Matvec, b: ArrayLike, *, eps: ArrayLike,
                       matrix: ArrayLike | None = None,
                       init: ArrayLike | None = None) -> tuple[Array, SolveInfo]:
    r"""Solve ``(A + eps I) v = b`` by a dense eigendecomposition of symmetric ``A``.

    .. math:: v = U \operatorname{diag}\big(1 / (\lambda_i + \epsilon)\big) U^\top b

    ``A + eps I`` must be positive definite (``lambda_min(A) > -eps``); otherwise the status
    is ``"negative_curvature"`` (``v`` is still the solve when ``A + eps I`` is nonsingular).
    The dense counterpart of :func:`damped_solve`, for small problems and references.

    Args:
      matvec: ``v -> A v`` for symmetric ``A`` on flat vectors.
      b: right-hand side (1-D).
      eps: damping (may be traced).
      matrix: optional dense ``A`` (skips forming it).
      init: ignored (accepted for the solver protocol).

    Returns:
      ``(v, info)``; ``info.min_curvature`` is ``lambda_min(A) + eps``, the smallest eigenvalue
      of the damped matrix.

    Example:
      >>> import jax.numpy as jnp
      >>> A = jnp.diag(jnp.array([3.0, 1.0]))
      >>> v, info = damped_dense_solve(lambda u: A @ u, jnp.array([4.0, 2.0]), eps=1.0)
      >>> v.tolist(), status_name(info.status)
      ([1.0, 1.0], 'converged')
      >>> status_name(damped_dense_solve(lambda u: -A @ u, jnp.ones(2), eps=2.0)[1].status)
      'negative_curvature'
    """
    del init
    b = jnp.asarray(b)
    a = _dense_matrix(matvec, b, matrix)
    lam, vecs = jnp.linalg.eigh(0.5 * (a + a.T))
    v = vecs @ ((vecs.T @ b) / (lam + eps))
    res = relative_residual(lambda u: a @ u + eps * u, v, b)
    curv = jnp.min(lam) + eps
    status = jnp.where(curv > 0, CONVERGED, NEGATIVE_CURVATURE)
    status = jnp.where(jnp.all(jnp.isfinite(v)), status, DIVERGED)
    return v, solve_info(status, res, 0, min_curvature=curv, negative_curvature=curv <= 0,
                         dtype=b.dtype)


def neumann_solve(matvec: Matvec, b: ArrayLike, *, steps, lr: ArrayLike,
                  max_steps: int | None = None,
                  init: ArrayLike | None = None) -> tuple[Array, SolveInfo]:
    r"""The K-term truncated Neumann series ``v = lr sum_{j<K} (I - lr A)^j b``.

    .. math:: A^{-1} \approx \alpha \sum_{j=0}^{K-1} (I - \alpha A)^j

    Spectrally ``1/lambda`` becomes ``(1 - (1 - alpha lambda)^K) / lambda`` (``alpha K`` on
    the null space). The series converges on ``range(A)`` iff ``0 < alpha lambda < 2`` for
    every nonzero eigenvalue. Guard: for a PSD ``A`` and a convergent step the remainder
    ``|(I - alpha A)^K b| <= |b|`` (``info.growth``, over the *active* steps); a growth above
    :data:`MAX_GROWTH` or a non-finite ``v`` is status ``"diverged"``. Otherwise the status is
    ``"converged"`` when the true residual is below :func:`default_tol`, else ``"max_steps"``.

    Args:
      matvec: ``v -> A v`` on flat vectors.
      b: right-hand side (1-D).
      steps: number of terms K (Python int >= 0; or traced with a static ``max_steps``).
      lr: the step size alpha > 0 (may be traced).
      max_steps: optional static bound enabling a traced ``steps`` (terms past it masked).
      init: ignored (accepted for the solver protocol).

    Returns:
      ``(v, info)``; ``info.residual`` is ``|A v - b| / |b|`` (one extra ``matvec``), equal
      to ``info.growth`` in exact arithmetic.

    Example:
      >>> import jax.numpy as jnp
      >>> v, info = neumann_solve(lambda u: 2.0 * u, jnp.ones(1), steps=2, lr=0.25)
      >>> v.tolist(), float(info.growth), status_name(info.status)      # 0.25 (1 + 0.5)
      ([0.375], 0.25, 'max_steps')
    """
    del init
    b = jnp.asarray(b)
    length, active = _checks.steps_and_mask(steps, max_steps)

    def body(carry, j):
        acc, p = carry
        keep = True if active is None else j < active
        acc = acc + jnp.where(keep, p, 0.0)
        # Masked steps must not advance p either: the growth below is over active steps.
        p = jnp.where(keep, p - lr * matvec(p), p)
        return (acc, p), None

    (acc, p), _ = lax.scan(body, (jnp.zeros_like(b), b), jnp.arange(length))
    v = lr * acc
    nb = jnp.linalg.norm(b)
    growth = jnp.linalg.norm(p) / jnp.where(nb > 0, nb, 1.0)
    res = relative_residual(matvec, v, b)
    bad = ~(growth <= MAX_GROWTH) | ~jnp.all(jnp.isfinite(v))
    status = jnp.where(bad, DIVERGED, MAX_STEPS)
    status = jnp.where(~bad & (res <= default_tol(b.dtype)), CONVERGED, status)
    k = length if active is None else jnp.minimum(active, length)
    return v, solve_info(status, res, k, growth=growth, dtype=b.dtype)


# ---------------------------------------------------------------------------------------------
# Conjugate gradient (scan, fixed budget) and the damped solve (while loop, tolerance)
# ---------------------------------------------------------------------------------------------



def _operator_scale(matvec, b):
    # |A z| / |z| for a fixed random probe z: the rms eigenvalue (sqrt(trace(A^2)/n)), so even
    # the first direction is judged against the operator's scale. Unlike the Rayleigh quotient
    # z^T A z / |z|^2 it does not cancel to ~0 on an indefinite A.
    probe = jax.random.normal(jax.random.PRNGKey(0), b.shape, b.dtype)
    return jnp.linalg.norm(matvec(probe)) / jnp.linalg.norm(probe)


def _cg_state(matvec, b, init):
    bb = jnp.vdot(b, b)
    if init is None:
        v, r = jnp.zeros_like(b), b
    else:
        v = jnp.asarray(init, b.dtype)
        r = b - matvec(v)
    rs = jnp.vdot(r, r)
    return bb, v, r, rs


def _cg_step(matvec, state, *, guard, target, run, spd):
    """One guarded CG step; ``run`` masks it (traced step count or while-loop)."""
    v, r, p, rs, pp, scale, alive, k, neg, brk, min_curv = state
    tiny = jnp.finfo(r.dtype).tiny
    live = run & alive & (rs > target)
    # A step that is masked (past `steps`, converged, or frozen) skips its HVP: with a `tol`,
    # the loop length is static but the work stops. (Under vmap both branches run.)
    ap = lax.cond(live, matvec, jnp.zeros_like, p)
    pap = jnp.vdot(p, ap)
    curv = pap / jnp.maximum(pp, tiny)
    scale = jnp.where(live, jnp.maximum(scale, jnp.abs(curv)), scale)
    broken = jnp.abs(pap) <= guard * scale * pp
    ok = live & ~broken
    min_curv = jnp.where(live, jnp.minimum(min_curv, curv), min_curv)
    # The damped system must be positive definite: any p^T A p <= 0 disproves it. For plain CG a
    # negative step is legitimate and only recorded.
    neg = neg | (live & (pap <= 0.0)) if spd else neg | (ok & (pap < 0.0))
    brk = brk | (live & broken)
    alpha = jnp.where(ok, rs / jnp.where(ok, pap, 1.0), 0.0)
    v = v + alpha * p
    r = r - alpha * ap
    rs_new = jnp.vdot(r, r)
    beta = jnp.where(ok, rs_new / jnp.where(ok, rs, 1.0), 0.0)
    p = jnp.where(ok, r + beta * p, p)
    # |p|^2 without another reduction: r_new is orthogonal to p by construction
    # (r_new.p = r.p - alpha p.Ap = 0), so |r_new + beta p|^2 = |r_new|^2 + beta^2 |p|^2.
    # One reduction fewer per step is ~35% of the time on a GPU (benchmarks/README.md).
    pp = jnp.where(ok, rs_new + beta * beta * pp, pp)
    rs = jnp.where(ok, rs_new, rs)
    # A breakdown freezes the iterate for good; convergence and masked steps do not matter
    # (they change nothing either way).
    alive = alive & ~(live & broken)
    return (v, r, p, rs, pp, scale, alive, k + ok.astype(jnp.int32), neg, brk, min_curv)


def _status(res, tol, brk, neg, neg_is_error):
    conv = res <= tol
    status = jnp.where(conv, CONVERGED, MAX_STEPS)
    status = jnp.where(~conv & brk, BREAKDOWN, status)
    # Plain CG steps through negative curvature (only the flag records it); where the
    # operator must be positive definite, it is a failure whatever the residual.
    if neg_is_error:
        status = jnp.where(neg, NEGATIVE_CURVATURE, status)
    return status


def cg_solve(matvec: Matvec, b: ArrayLike, *, steps, max_steps: int | None = None,
             tol: float | None = None, init: ArrayLike | None = None,
             guard: float | None = None) -> tuple[Array, SolveInfo]:
    r"""Conjugate gradient on symmetric ``A v = b``, continuing through negative curvature.

    Iterates ``v_k`` lie in ``v_0 + span{r_0, A r_0, ...}``; for a symmetric PSD ``A`` and a
    consistent ``b`` (from ``v_0 = 0``) they converge to ``A^+ b``. On a nonsingular
    *indefinite* ``A`` CG is still well defined whenever ``p^T A p != 0`` (the Lanczos
    process behind it does not need definiteness), and after ``n`` steps it reaches
    ``A^{-1} b`` in exact arithmetic: a negative ``p^T A p`` only flips the sign of the step,
    so it is taken (and reported in ``info.negative_curvature``) rather than stopping.

    Breakdown guard: a direction with ``|p^T A p| <= guard * scale * p^T p`` is a true
    breakdown (no step is defined); the iterate is frozen there and ``status`` is
    ``"breakdown"``. On a singular inconsistent PSD system this is what happens once the
    range part of the residual is solved: the next direction lies (numerically) in the null
    space. ``scale`` is the largest ``|p^T A p| / p^T p`` seen so far, starting from
    ``|A z| / |z|`` for a fixed random probe ``z`` (one extra ``matvec``), so the first
    direction is already judged against the operator's scale. On an indefinite ``A`` an exact
    breakdown (``p^T A p = 0`` with a nonzero residual) can happen even when ``A`` is
    nonsingular, e.g. ``A = diag(1, -1)``, ``b = (1, 1)``; CG then reports ``"breakdown"`` and
    :func:`lsqr_solve` is the solver to use.

    Args:
      matvec: ``v -> A v`` on flat vectors.
      b: right-hand side (1-D array).
      steps: iterations (Python int; or traced with a static ``max_steps``).
      max_steps: optional static bound enabling a traced ``steps``.
      tol: optional relative residual ``|r| / |b|`` at which iterations stop early (the loop
        length is static; the remaining steps skip their ``matvec``). Also the
        ``"converged"`` test of ``status`` (default ``1e-6`` in float32, ``1e-12`` in
        float64).
      init: optional initial guess (warm start), same shape as ``b``.
      guard: relative curvature threshold (default ``sqrt(eps)``: 1.5e-8 in float64, 3.5e-4
        in float32).

    Returns:
      ``(v, info)``: a :class:`SolveInfo` with ``residual`` (true, one extra ``matvec``),
      ``steps``, ``status`` (never ``"negative_curvature"``: CG steps through it),
      ``negative_curvature`` (bool: a direction with ``p^T A p < 0`` was met) and
      ``min_curvature`` (smallest ``p^T A p / p^T p`` seen).

    Example:
      >>> import jax.numpy as jnp
      >>> A = jnp.diag(jnp.array([2.0, -1.0]))                 # indefinite
      >>> v, info = cg_solve(lambda u: A @ u, jnp.array([2.0, 3.0]), steps=2)
      >>> v.round(5).tolist(), bool(info.negative_curvature), int(info.steps)
      ([1.0, -3.0], True, 2)
    """
    b = jnp.asarray(b)
    length, active = _checks.steps_and_mask(steps, max_steps)
    return _cg(matvec, b, length=length, active=active, tol=tol, init=init, guard=guard,
               spd=False)


def _cg(matvec, b, *, length, active, tol, init, guard, spd, while_loop=False, cap=None):
    dtype = b.dtype
    macheps = _machine_eps(dtype)
    guard = jnp.sqrt(macheps) if guard is None else guard
    bb, v, r, rs = _cg_state(matvec, b, init)
    # Without an explicit tol, iterate down to rounding level (as the original CG did).
    target = (macheps**2) * bb if tol is None else jnp.maximum((tol**2) * bb, (macheps**2) * bb)
    scale0 = _operator_scale(matvec, b).astype(dtype)
    state = (v, r, r, rs, rs, scale0, jnp.asarray(True), jnp.asarray(0, jnp.int32),
             jnp.asarray(False), jnp.asarray(False), jnp.asarray(jnp.inf, dtype))
    if not while_loop:
        def body(carry, j):
            run = jnp.asarray(True) if active is None else j < active
            return _cg_step(matvec, carry, guard=guard, target=target, run=run, spd=spd), None

        state, _ = lax.scan(body, state, jnp.arange(length))
    else:
        def cond(carry):
            _, _, _, rs_, _, _, alive, k, *_ = carry
            return (k < cap) & alive & (rs_ > target) & jnp.isfinite(rs_)

        def wbody(carry):
            carry = _cg_step(matvec, carry, guard=guard, target=target, run=True, spd=spd)
            # Residual replacement: the recursively updated r drifts from b - A v (in float32
            # by ~eps * cond), so a "converged" r is checked against the true residual and,
            # if that is not small, CG restarts from it instead of stopping on a false claim.
            v_, r_, p_, rs_, pp_, *rest = carry

            def replace(_):
                r_true = b - matvec(v_)
                rs_true = jnp.vdot(r_true, r_true)
                return r_true, r_true, rs_true, rs_true

            r_, p_, rs_, pp_ = lax.cond(rs_ <= target, replace,
                                        lambda _: (r_, p_, rs_, pp_), None)
            return (v_, r_, p_, rs_, pp_, *rest)

        state = lax.while_loop(cond, wbody, state)
    v, _, _, _, _, _, _, k, neg, brk, min_curv = state
    res = relative_residual(matvec, v, b)
    tol_status = default_tol(dtype) if tol is None else tol
    status = _status(res, tol_status, brk, neg, neg_is_error=spd)
    status = jnp.where(jnp.all(jnp.isfinite(v)), status, DIVERGED)
    return v, solve_info(status, res, k, negative_curvature=neg, min_curvature=min_curv,
                         dtype=dtype)


def damped_solve(matvec: Matvec, b: ArrayLike, *, eps: ArrayLike,
                 max_steps: int | None = None, tol: float | None = None,
                 init: ArrayLike | None = None,
                 maxiter: int | None = None) -> tuple[Array, SolveInfo]:
    r"""Solve ``(A + eps I) v = b`` by CG to a relative tolerance, checking definiteness.

    The damped system is symmetric positive definite when ``A`` is PSD (or merely has
    ``lambda_min > -eps``). A direction with ``p^T (A + eps I) p <= 0`` proves it is not: that
    is reported as ``status = "negative_curvature"`` (with the smallest curvature seen in
    ``info.min_curvature``; the iteration continues as in :func:`cg_solve`, so ``v`` is
    still the solve of the indefinite system when it is nonsingular). Stops when the
    residual falls below ``tol * |b|`` -- checked against the true residual ``b - A v`` (one
    extra ``matvec``, restarting CG from it when the running estimate was wrong) -- or
    after ``max_steps`` iterations (a ``lax.while_loop``: not reverse-differentiable).

    Args:
      matvec: ``v -> A v`` (``A`` symmetric, typically PSD).
      b: right-hand side (1-D).
      eps: damping (may be traced).
      max_steps: iteration cap (static int; default ``n``).
      tol: relative residual tolerance (default ``1e-6`` in float32, ``1e-12`` in float64).
      init: optional initial guess (warm start).
      maxiter: deprecated name of ``max_steps``.

    Returns:
      ``(v, info)`` as in :func:`cg_solve`.

    Example:
      >>> import jax.numpy as jnp
      >>> v, info = damped_solve(lambda u: u, jnp.ones(2), eps=1.0)
      >>> v.tolist(), status_name(info.status)
      ([0.5, 0.5], 'converged')
    """
    b = jnp.asarray(b)
    max_steps = _checks.renamed(max_steps, maxiter, "max_steps", "maxiter", "damped_solve")
    n = b.shape[0]
    cap = n if max_steps is None else _checks.check_steps(max_steps, "max_steps")
    tol = default_tol(b.dtype) if tol is None else tol
    # No relative breakdown guard: with a tiny eps on a singular H the null directions have
    # curvature eps, far below sqrt(machine eps) * |H|, and must still be stepped along.
    return _cg(lambda u: matvec(u) + eps * u, b, length=None, active=None, tol=tol, init=init,
               guard=0.0, spd=True, while_loop=True, cap=cap)


# ---------------------------------------------------------------------------------------------
# Minimum-norm least squares for singular symmetric systems
# ---------------------------------------------------------------------------------------------


def lsqr_solve(matvec: Matvec, b: ArrayLike, *, steps, max_steps: int | None = None,
               tol: float | None = None,
               init: ArrayLike | None = None) -> tuple[Array, SolveInfo]:
    r"""Minimum-norm least-squares solution ``A^+ b`` of a symmetric system, matrix-free.

    The minimum-length solution of a singular symmetric system is what MINRES-QLP computes
    (Choi, Paige & Saunders, SIAM J. Sci. Comput. 33(4), 2011). This uses the equivalent, and
    simpler, LSQR (Paige & Saunders, ACM TOMS 8(1), 1982) with ``A^T = A``: Golub-Kahan
    bidiagonalization of ``A`` started from ``b``,

    .. math:: v_k = \arg\min \{\, |b - A v| : v \in
        \mathcal K_k(A^2, A b) = \operatorname{span}\{Ab, A^3 b, \dots\} \,\}.

    Why this is ``A^+ b``: every Krylov vector ``A^{2j+1} b`` lies in
    ``range(A^T) = range(A)``, so every iterate does. Once the Krylov space is invariant
    (after at most as many steps as ``b`` has distinct nonzero ``lambda^2``) it contains
    ``A^+ b = p(A^2) A b`` (a polynomial interpolating ``1/lambda^2``), which minimizes
    ``|b - A v|`` over *all* ``v`` and is the only minimizer in ``range(A)``. So the limit is
    ``A^+ b`` whether ``b`` lies in ``range(A)`` or not (where CG picks up ``b``'s null-space
    part), and for indefinite ``A``. LSQR is CG on the normal equations ``A^2 v = A b``
    computed stably; it converges like CG with condition number ``cond(A)^2``, i.e. needs
    about as many steps as :func:`cg_solve` would on ``A^2``. A range-restricted MINRES with
    one HVP per step was tried first and rejected: without reorthogonalization the lost
    orthogonality of its Lanczos basis made the iterates explode once past the rank.

    Cost: two HVPs per iteration (``A v`` and ``A^T u = A u``), plus five outside the loop
    (the scale probe, the first ``A u``, and ``A v``, ``A r``, ``A b`` for the true residuals;
    one more with ``init``): ``2 k + 5`` for ``k`` iterations.

    Args:
      matvec: ``v -> A v`` for symmetric ``A`` on flat vectors.
      b: right-hand side (1-D).
      steps: iterations (Python int; or traced with static ``max_steps``).
      max_steps: optional static bound enabling a traced ``steps``.
      tol: optional early stop when the estimated ``|A r| / (|A| |r|)`` or ``|r| / |b|``
        falls below it; also the ``"converged"`` test on the true normal-equation residual
        (default ``sqrt(eps)``).
      init: optional initial guess; the correction lies in ``range(A)`` (so ``init``'s own
        null-space part is kept).

    Returns:
      ``(v, info)``; ``info.residual`` is ``|A v - b| / |b|`` (for an inconsistent ``b``
      the least-squares residual, not an error), ``info.normal_residual`` is
      ``|A (A v - b)| / |A b|`` (zero at a least-squares solution), which ``status`` uses.

    Example:
      >>> import jax.numpy as jnp
      >>> A = jnp.diag(jnp.array([2.0, -1.0, 0.0]))           # singular, indefinite
      >>> v, info = lsqr_solve(lambda u: A @ u, jnp.array([2.0, 3.0, 5.0]), steps=3)
      >>> v.round(5).tolist(), status_name(info.status)
      ([1.0, -3.0, 0.0], 'converged')
    """
    b = jnp.asarray(b)
    length, active = _checks.steps_and_mask(steps, max_steps)
    dtype = b.dtype
    macheps = _machine_eps(dtype)
    tiny = jnp.finfo(dtype).tiny
    x0 = jnp.zeros_like(b) if init is None else jnp.asarray(init, dtype)
    rhs = b if init is None else b - matvec(x0)
    scale = _operator_scale(matvec, b).astype(dtype)

    def normalize(vec):
        nrm = jnp.linalg.norm(vec)
        ok = nrm > tiny
        return jnp.where(ok, vec / jnp.where(ok, nrm, 1.0), 0.0), nrm

    u, beta = normalize(rhs)
    av, alpha = normalize(matvec(u))
    # A (near-)zero alpha or beta is the lucky breakdown of the bidiagonalization: the Krylov
    # space is invariant and the current iterate is the exact least-squares solution.
    # At invariance the computed alpha/beta are not ~eps |A| but up to ~1e3 eps |A| (lost
    # orthogonality); past it a normalized rounding-noise vector makes the iterate explode.
    small = jnp.sqrt(macheps) * scale
    alive0 = (beta > tiny) & (alpha > small)
    # Early stop at rounding level by default: the estimates bottom out at ~10-50 eps.
    rel_tol = 100.0 * macheps if tol is None else tol
    # (x, u, v, w, alpha, phibar, rhobar, alive, k)
    state = (jnp.zeros_like(b), u, av, av, alpha, beta, alpha, alive0, jnp.asarray(0, jnp.int32))
    anorm = scale

    def advance(carry):
        x, u, v, w, alpha, phibar, rhobar, alive, k = carry
        u_new, beta = normalize(matvec(v) - alpha * u)
        v_new, alpha_new = normalize(matvec(u_new) - beta * v)
        rho = jnp.hypot(rhobar, beta)
        rho_s = jnp.where(rho > tiny, rho, 1.0)
        c, s = rhobar / rho_s, beta / rho_s
        theta = s * alpha_new
        rhobar_n = -c * alpha_new
        phi = c * phibar
        phibar_n = s * phibar
        x_n = x + (phi / rho_s) * w
        w_n = v_new - (theta / rho_s) * w
        # Paige & Saunders' estimates: |r| = phibar, |A^T r| = phibar * alpha * |c|.
        ar = phibar_n * alpha_new * jnp.abs(c)
        done = ((ar <= rel_tol * anorm * phibar_n) | (phibar_n <= rel_tol * beta_b)
                | (alpha_new <= small) | (beta <= small))
        return (x_n, u_new, v_new, w_n, alpha_new, phibar_n, rhobar_n, alive & ~done, k + 1)

    def body(carry, j):
        alive = carry[7]
        run = alive if active is None else alive & (j < active)
        # Masked steps (past `steps`, or stopped at `tol`) skip their two HVPs.
        return lax.cond(run, advance, lambda c: c, carry), None

    beta_b = beta
    state, _ = lax.scan(body, state, jnp.arange(length))
    x, k = state[0] + x0, state[8]
    r = matvec(x) - b
    nb = jnp.linalg.norm(b)
    res = jnp.linalg.norm(r) / jnp.where(nb > 0, nb, 1.0)
    ab = jnp.linalg.norm(matvec(b))
    normal = jnp.linalg.norm(matvec(r)) / jnp.where(ab > 0, ab, 1.0)
    tol_status = jnp.sqrt(macheps) if tol is None else tol
    status = jnp.where(normal <= tol_status, CONVERGED, MAX_STEPS)
    status = jnp.where(jnp.all(jnp.isfinite(x)), status, DIVERGED)
    return x, solve_info(status, res, k, normal_residual=normal, dtype=dtype)


minres_solve = _checks.deprecated_alias(lsqr_solve, "bilevel_lib.linalg.minres_solve",
                                        "bilevel_lib.linalg.lsqr_solve")


# ---------------------------------------------------------------------------------------------
# Failures: raise eagerly and under jit
# ---------------------------------------------------------------------------------------------


def _first(values, mask, pick):
    values = np.broadcast_to(np.asarray(values, np.float64), mask.shape)[mask]
    values = values[np.isfinite(values)]
    return float(pick(values)) if values.size else float("nan")


def failure_message(status: ArrayLike, *, residual: ArrayLike = np.nan,
                    growth: ArrayLike = np.nan, min_curvature: ArrayLike = np.nan,
                    eps: ArrayLike | None = None, what: str = "The linear solve",
                    hint: str = "") -> str | None:
    """The error message for a failed solve (``None`` when no status is a failure).

    Runs on the host, on concrete values (arrays of any batch shape): it is what
    :func:`raise_if_failed` raises, eagerly and from inside ``jit``.

    Args:
      status: status code(s) (see :data:`STATUS`).
      residual, growth, min_curvature: the fields of the :class:`SolveInfo` (same shape).
      eps: the damping of a damped solve (``min_curvature`` is then that of ``A + eps I``).
      what: the subject of the message ("The Neumann hypergradient").
      hint: a sentence on what to change.

    Returns:
      A string, or ``None``.

    Example:
      >>> print(failure_message(4, growth=3e5, what="The Neumann series")[:69])
      The Neumann series is diverging: |(I - lr A)^K b| / |b| grew to 3e+05
      >>> failure_message([0, 1]) is None
      True
    """
    status = np.asarray(status)
    failed = np.isin(status, FAILURES)
    if not failed.any():
        return None
    batch = (f" ({int(failed.sum())} of {status.size} solves in the batch failed.)"
             if status.ndim else "")
    tail = (f" {hint}" if hint else "") + batch + (
        " Pass throw=False to get the answer with its status instead.")
    neg = status == NEGATIVE_CURVATURE
    if neg.any():
        curv = _first(min_curvature, neg, np.min)
        if eps is None or np.all(np.isnan(np.asarray(eps, np.float64))):
            return (f"{what}: the operator must be positive definite, but a direction with "
                    f"curvature p^T A p / p^T p = {curv:.3g} <= 0 was found (status "
                    f"'negative_curvature').{tail}")
        damping = _first(eps, neg, np.max)
        return (f"{what}: H + eps I is not positive definite (eps = {damping:.3g}): a direction "
                f"with curvature p^T H p / p^T p = {curv - damping:.3g} <= -eps was found "
                f"(status 'negative_curvature').{tail}")
    bad = status == DIVERGED
    grown = _first(growth, bad, np.max)
    if np.isfinite(grown) and grown > MAX_GROWTH:
        return (f"{what} is diverging: |(I - lr A)^K b| / |b| grew to {grown:.3g} "
                f"(status 'diverged').{tail}")
    res = _first(residual, bad, np.max)
    if np.isfinite(res) and res > MAX_GROWTH:
        return (f"{what} diverged: its relative residual |A v - b| / |b| is {res:.3g} > "
                f"{MAX_GROWTH:g} (status 'diverged').{tail}")
    return f"{what} is not finite (status 'diverged').{tail}"


def _raise_failure(status, residual, growth, min_curvature, eps, *, what, hint):
    message = failure_message(status, residual=residual, growth=growth,
                              min_curvature=min_curvature, eps=eps, what=what, hint=hint)
    if message is not None:
        raise FloatingPointError(message)


@functools.cache
def _failure_check(what, hint):
    """The traced check for one message: a ``lax.cond`` whose failure branch calls back.

    :func:`raise_if_failed`'s check: an effect (``jax.debug.callback``), so that it runs
    when the caller keeps nothing but the diagnostics, at the price of JAX's slower dispatch
    path for the jitted caller (about 0.2 ms per call). Estimators return an answer and use
    :func:`guard`'s pass-through instead, which has no effect.

    A ``custom_vmap``: under ``vmap`` a ``lax.cond`` on a batched predicate becomes a select
    that runs both branches, so the host callback would run on every call of a sweep
    (measured: a 21-value sweep of 2000 outer steps went from 0.1 s to 33 s). The batching
    rule instead reduces the predicate over the batch and checks the whole batch at once, so
    the success path stays one scalar ``cond`` at any nesting of ``vmap``.
    """
    raise_fn = functools.partial(_raise_failure, what=what, hint=hint)

    @jax.custom_batching.custom_vmap
    def check(failed, status, residual, growth, min_curvature, eps):
        lax.cond(jnp.any(failed),
                 lambda: jax.debug.callback(raise_fn, status, residual, growth, min_curvature,
                                            eps),
                 lambda: None)
        return failed

    @check.def_vmap
    def check_batched(axis_size, in_batched, *args):
        args = [a if batched else jnp.broadcast_to(a, (axis_size, *jnp.shape(a)))
                for a, batched in zip(args, in_batched, strict=True)]
        return check(*args), True

    return check


def _diagnostics(info, eps):
    """(failed, status, residual, growth, min_curvature, eps): what a check reads."""
    failed = jnp.isin(info.status, jnp.asarray(FAILURES))
    # Diagnostics carry no derivative; stop_gradient keeps the check out of autodiff.
    return tuple(lax.stop_gradient(jnp.asarray(a)) for a in (
        failed, info.status, info.residual, info.growth, info.min_curvature,
        jnp.nan if eps is None else eps))


def raise_if_failed(info: SolveInfo, *, throw: bool = True, eps: ArrayLike | None = None,
                    what: str = "The linear solve", hint: str = "") -> SolveInfo:
    r"""Raise ``FloatingPointError`` if a solve failed -- eagerly, and at run time under ``jit``.

    A failure is a status in ``("negative_curvature", "diverged")``; ``"max_steps"`` and
    ``"breakdown"`` are answers, not errors. On concrete values the check runs at once. Under
    ``jax.jit`` (or ``vmap``, ``scan``) it is a ``lax.cond`` on the status whose failure
    branch is a host callback (``jax.debug.callback``) that raises the same message; the
    compiled program then fails when run, and JAX re-raises it as a ``JaxRuntimeError``
    whose text contains the message. On the success path the cost is one predicate and one
    branch, also under ``vmap`` (a custom batching rule checks the whole batch with one
    predicate; the message then counts the failed elements). The callback is an effect, so
    the check runs even when nothing uses ``info``; the price is JAX's slower dispatch for
    the jitted caller. An estimator's answer goes through :func:`guard` instead.

    Args:
      info: a :class:`SolveInfo` (any batch shape).
      throw: ``False`` skips the check (the caller reads ``info.status``).
      eps: damping of a damped solve (for the message).
      what: the subject of the message.
      hint: what to change, appended to the message.

    Returns:
      ``info`` unchanged.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> solve = lambda b: damped_solve(lambda u: -u, b, eps=0.5)   # -I + 0.5 I: indefinite
      >>> try:
      ...     raise_if_failed(jax.jit(solve)(jnp.ones(2))[1], eps=0.5)
      ... except FloatingPointError as err:
      ...     print(str(err)[:48])
      The linear solve: H + eps I is not positive defi
    """
    if not throw:
        return info
    args = _diagnostics(info, eps)
    if _checks.is_concrete(args):
        _raise_failure(*(np.asarray(a) for a in args[1:]), what=what, hint=hint)
        return info
    _failure_check(what, hint)(*args)
    return info


def guard(value: Any, info: SolveInfo, *, throw: bool = True, eps: ArrayLike | None = None,
          what: str = "The linear solve", hint: str = "") -> Any:
    r"""``value``, passed through the check of :func:`raise_if_failed` -- also under ``jit``.

    What every estimator does with its answer before returning it: an unusable answer raises
    (eagerly at once, under ``jit`` when the program runs) instead of being returned. Traced,
    the answer passes through a ``lax.cond`` on the failure whose failing branch is a
    ``pure_callback`` that raises; the passing branch returns it as it is, so its bits are
    unchanged. The answer's dependence on the check keeps XLA from pruning it, and with no
    effect in the program JAX keeps its fast dispatch path for the jitted caller (an effect,
    as in :func:`raise_if_failed`, costs about 0.2 ms per call; ``benchmarks/``, v3). Under
    ``vmap`` one predicate checks the whole batch; derivatives pass straight through.

    Args:
      value: the answer (any pytree).
      info, throw, eps, what, hint: as in :func:`raise_if_failed`.

    Returns:
      ``value``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> def solve(b):
      ...     v, info = damped_solve(lambda u: -u, b, eps=0.5)           # indefinite
      ...     return guard(v, info, eps=0.5)
      >>> try:
      ...     jax.jit(solve)(jnp.ones(2))
      ... except Exception as err:                      # JaxRuntimeError under jit
      ...     print("not positive definite" in str(err))
      True
    """
    args = _diagnostics(info, eps)
    if not throw or _checks.is_concrete(args):
        raise_if_failed(info, throw=throw, eps=eps, what=what, hint=hint)
        return value
    leaves, treedef = jax.tree_util.tree_flatten(value)
    leaves = _failure_gate(what, hint)(*args, leaves)
    return jax.tree_util.tree_unflatten(treedef, leaves)


@functools.cache
def _failure_gate(what, hint):
    """``gate(failed, *diag, leaves) -> leaves``, through a ``cond`` that raises on failure.

    A pass-through, not a checked zero added to the answer: the addition changed XLA's fusion
    around the answer and the rounding of long runs (chapter 4), the pass-through does not
    (``tests/test_blo.py``, bit for bit over 300 steps). ``custom_vmap``: a batched predicate
    would turn the ``cond`` into a select that calls back on every call, so the batch is
    checked with one predicate. ``custom_jvp``: the tangent of the answer is its own.
    """
    raise_fn = functools.partial(_raise_failure, what=what, hint=hint)

    def fail(leaves, diag):
        def callback(leaves, diag):
            raise_fn(*diag)
            return leaves  # reached only if nothing failed after all
        shapes = [jax.ShapeDtypeStruct(jnp.shape(a), jnp.result_type(a)) for a in leaves]
        return jax.pure_callback(callback, shapes, leaves, diag)

    @jax.custom_batching.custom_vmap
    def gate(failed, *rest):
        *diag, leaves = rest
        return lax.cond(jnp.any(failed), fail, lambda leaves, _: leaves, leaves, diag)

    @gate.def_vmap
    def gate_batched(axis_size, in_batched, failed, *rest):
        *diag, leaves = rest
        diag = [a if b else jnp.broadcast_to(a, (axis_size, *jnp.shape(a)))
                for a, b in zip(diag, in_batched[1:-1], strict=True)]
        return gate(failed, *diag, leaves), in_batched[-1]

    @jax.custom_jvp
    def gated(*args):
        return gate(*args)

    @gated.defjvp
    def gated_jvp(primals, tangents):
        return gated(*primals), tangents[-1]

    return gated


# ---------------------------------------------------------------------------------------------
# Checks that work under jit
# ---------------------------------------------------------------------------------------------


def check_solution(info: SolveInfo, *, tol: float | None = None,
                   allow=("converged", "max_steps")) -> None:
    r"""``checkify.check`` that a solve's ``info`` is usable; works under ``jax.jit``.

    A stricter, opt-in companion of :func:`raise_if_failed` (which every estimator calls by
    default): any status outside ``allow`` (``"breakdown"`` too) and an optional residual
    bound, reported through ``checkify`` instead of a host callback. Inside
    ``jax.jit(checkify.checkify(f))`` a failed check is returned as an error (raise it with
    ``err.throw()``); called eagerly outside ``checkify`` it raises at once.

    Args:
      info: a :class:`SolveInfo` from a solver or a hypergradient estimator.
      tol: optional bound on ``info.residual``.
      allow: status names accepted.

    Returns:
      None.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jax.experimental import checkify
      >>> A = -jnp.eye(2)                                       # A + 0.5 I is indefinite
      >>> def f(b):
      ...     v, info = damped_solve(lambda u: A @ u, b, eps=0.5)
      ...     check_solution(info)
      ...     return v
      >>> err, _ = jax.jit(checkify.checkify(f))(jnp.ones(2))
      >>> err.get() is not None                                # status 3: negative_curvature
      True
    """
    codes = [STATUS.index(name) for name in allow]
    status = info.status
    ok = jnp.zeros(jnp.shape(status), bool)
    for code in codes:
        ok = ok | (status == code)
    checkify.check(jnp.all(ok), "solver status {s} is not one of " + str(tuple(codes))
                   + " (codes index bilevel_lib.linalg.STATUS); residual {r}", s=status,
                   r=info.residual)
    checkify.check(jnp.all(jnp.isfinite(info.residual)), "solver residual is not finite")
    if tol is not None:
        checkify.check(jnp.all(info.residual <= tol), "residual {r} exceeds tol",
                       r=info.residual)
