r"""The library's core linear algebra: one HVP, one zero threshold, and linear solvers.

Every hypergradient estimator solves (or approximates) ``H v = b`` with the inner Hessian
``H`` reached only through Hessian-vector products. This module holds the pieces they share:

* :func:`hvp` -- the Hessian-vector product (forward-over-reverse);
* :func:`zero_threshold` -- the one rule deciding which eigenvalues count as zero;
* solvers with one protocol, modeled on ``jaxopt.linear_solve`` and lineax's ``Solution``:
  ``solve(matvec, b, *, init=None) -> (v, info)`` -- :func:`cg_solve`, :func:`damped_solve`,
  :func:`minres_solve`, :func:`dense_solve`;
* :func:`check_solution` -- a ``checkify`` check of an ``info`` dict that also works under
  ``jax.jit``.

``info`` is a dict of arrays with at least ``"residual"`` (the relative *true* residual
``|A v - b| / |b|``, recomputed with one extra ``matvec`` after the loop, never a running
estimate), ``"steps"`` (iterations actually run, int32) and ``"status"`` (int32 index into
:data:`STATUS`). All solvers run under ``jax.jit`` and ``jax.vmap`` (``lax.scan`` /
``lax.while_loop``) in float32 and float64.
"""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.experimental import checkify

from . import _checks

__all__ = [
    "STATUS",
    "NOISE_FACTOR",
    "status_name",
    "hvp",
    "zero_threshold",
    "pinv_eigh",
    "dense_solve",
    "cg_solve",
    "damped_solve",
    "minres_solve",
    "check_solution",
]

STATUS = ("converged", "max_steps", "breakdown", "negative_curvature", "diverged")
"""Names of the ``info["status"]`` codes, indexed by code.

* ``converged``: the stopping test on the true residual holds;
* ``max_steps``: the iteration budget ran out first (normal for a fixed ``steps``);
* ``breakdown``: a search direction had negligible curvature ``|p^T A p|`` against the
  operator's scale; the iterate is frozen there (CG on a singular inconsistent system);
* ``negative_curvature``: a direction with ``p^T A p <= 0`` was met where the operator must be
  positive definite (:func:`damped_solve`: ``H + eps I`` is indefinite);
* ``diverged``: the iterates grew (Neumann series outside its radius) or are not finite.
"""

CONVERGED, MAX_STEPS, BREAKDOWN, NEGATIVE_CURVATURE, DIVERGED = range(len(STATUS))

NOISE_FACTOR = 10.0
"""Default relative zero threshold, in units of the dtype's machine epsilon."""

# A kept eigenvalue this close above the cutoff may still be rounding noise: warn.
_AMBIGUOUS_FACTOR = 10.0


def status_name(code):
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


def hvp(grad_fn, y, v):
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


# ---------------------------------------------------------------------------------------------
# The zero threshold and the dense path
# ---------------------------------------------------------------------------------------------


def _eps(dtype):
    return float(jnp.finfo(dtype).eps)


def zero_threshold(values, *, rtol=None, dtype=None):
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
    rel = NOISE_FACTOR * _eps(dtype) if rtol is None else rtol
    return rel * jnp.max(jnp.abs(values))


def _warn_if_ambiguous(lam, cutoff, dtype, what="eigenvalues"):
    """Eagerly warn when the threshold decision is not clear-cut (never under ``jit``)."""
    if not _checks._is_concrete((lam, cutoff)):
        return
    lam = np.abs(np.asarray(lam, np.float64))
    cutoff = float(cutoff)
    if lam.size == 0 or lam.max() == 0:
        return
    noise = NOISE_FACTOR * _eps(dtype) * lam.max()
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


def pinv_eigh(hess, *, rtol=None):
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


def _true_residual(matvec, v, b):
    r = matvec(v) - b
    nb = jnp.linalg.norm(b)
    return jnp.linalg.norm(r) / jnp.where(nb > 0, nb, 1.0)


def _info(residual, steps, status, **extra):
    out = {"residual": residual, "steps": jnp.asarray(steps, jnp.int32),
           "status": jnp.asarray(status, jnp.int32)}
    out.update(extra)
    return out


def dense_solve(matvec, b, *, init=None, rtol=None, matrix=None):
    r"""Minimum-norm least-squares solution ``v = A^+ b`` by a dense eigendecomposition.

    The matrix is formed as ``vmap(matvec)(I)`` (n matrix-vector products) unless given;
    eigenvalues at or below :func:`zero_threshold` count as zero. For an inconsistent ``b``
    (a part outside ``range(A)``) ``info["residual"]`` is that part's relative norm: the
    least-squares residual, not an error.

    Args:
      matvec: ``v -> A v`` for symmetric ``A`` on flat vectors.
      b: right-hand side (1-D).
      init: ignored (accepted for the solver protocol).
      rtol: relative zero threshold (default ``NOISE_FACTOR * eps``).
      matrix: optional dense ``A`` (skips forming it).

    Returns:
      ``(v, info)``; ``info`` also has ``"min_eigenvalue"``.

    Example:
      >>> import jax.numpy as jnp
      >>> A = jnp.diag(jnp.array([2.0, 0.0]))
      >>> v, info = dense_solve(lambda u: A @ u, jnp.array([2.0, 1.0]))
      >>> v.tolist(), status_name(info["status"])
      ([1.0, 0.0], 'converged')
    """
    del init
    n = b.shape[0]
    a = jax.vmap(matvec)(jnp.eye(n, dtype=b.dtype)).T if matrix is None else matrix
    lam, vecs, inv = pinv_eigh(a, rtol=rtol)
    v = vecs @ (inv * (vecs.T @ b))
    res = _true_residual(lambda u: a @ u, v, b)
    status = jnp.where(jnp.all(jnp.isfinite(v)), CONVERGED, DIVERGED)
    return v, _info(res, 0, status, min_eigenvalue=jnp.min(lam))


# ---------------------------------------------------------------------------------------------
# Conjugate gradient (scan, fixed budget) and the damped solve (while loop, tolerance)
# ---------------------------------------------------------------------------------------------


def _steps_and_mask(steps, max_steps):
    """Static loop length, and the traced number of active iterations (or None)."""
    if max_steps is None:
        return _checks.check_steps(steps), None
    length = _checks.check_steps(max_steps, "max_steps")
    if isinstance(steps, bool) or not jnp.issubdtype(jnp.result_type(steps), jnp.integer):
        # A float K would silently act as ceil(K) through the mask ``j < steps``.
        raise TypeError(f"`steps` must be an integer (traced or not); got {steps!r}.")
    if _checks._is_concrete(steps):
        concrete = int(jnp.max(jnp.asarray(steps)))
        if jnp.min(jnp.asarray(steps)) < 0:
            raise ValueError(f"`steps` must be >= 0; got {steps!r}.")
        if concrete > length:
            raise ValueError(f"`steps` ({concrete}) must not exceed `max_steps` ({length}).")
    return length, jnp.asarray(steps)


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
    ap = matvec(p)
    pap = jnp.vdot(p, ap)
    curv = pap / jnp.maximum(pp, tiny)
    scale = jnp.maximum(scale, jnp.abs(curv))
    live = run & alive & (rs > target)
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
    status = jnp.where(~conv & ~brk & neg, NEGATIVE_CURVATURE, status)
    if neg_is_error:
        status = jnp.where(neg, NEGATIVE_CURVATURE, status)
    return status


def _default_tol(dtype):
    return 1e-6 if jnp.dtype(dtype) == jnp.float32 else 1e-12


def cg_solve(matvec, b, *, steps, max_steps=None, tol=None, init=None, guard=None):
    r"""Conjugate gradient on symmetric ``A v = b``, continuing through negative curvature.

    Iterates ``v_k`` lie in ``v_0 + span{r_0, A r_0, ...}``; for a symmetric PSD ``A`` and a
    consistent ``b`` (from ``v_0 = 0``) they converge to ``A^+ b``. On a nonsingular
    *indefinite* ``A`` CG is still well defined whenever ``p^T A p != 0`` (the Lanczos
    process behind it does not need definiteness), and after ``n`` steps it reaches
    ``A^{-1} b`` in exact arithmetic: a negative ``p^T A p`` only flips the sign of the step,
    so it is taken (and reported in ``info["negative_curvature"]``) rather than stopping.

    Breakdown guard: a direction with ``|p^T A p| <= guard * scale * p^T p`` is a true
    breakdown (no step is defined); the iterate is frozen there and ``status`` is
    ``"breakdown"``. On a singular inconsistent PSD system this is what happens once the
    range part of the residual is solved: the next direction lies (numerically) in the null
    space. ``scale`` is the largest ``|p^T A p| / p^T p`` seen so far, starting from
    ``|A z| / |z|`` for a fixed random probe ``z`` (one extra ``matvec``), so the first
    direction is already judged against the operator's scale.

    Args:
      matvec: ``v -> A v`` on flat vectors.
      b: right-hand side (1-D array).
      steps: iterations (Python int; or traced with a static ``max_steps``).
      max_steps: optional static bound enabling a traced ``steps``.
      tol: optional relative residual ``|r| / |b|`` at which iterations stop early (masked
        steps; the loop length is static). Also the ``"converged"`` test of ``status``
        (default ``1e-6`` in float32, ``1e-12`` in float64).
      init: optional initial guess (warm start), same shape as ``b``.
      guard: relative curvature threshold (default ``sqrt(eps)``: 1.5e-8 in float64, 3.5e-4
        in float32).

    Returns:
      ``(v, info)`` with ``info`` keys ``residual`` (true, one extra ``matvec``), ``steps``,
      ``status``, ``negative_curvature`` (bool: a direction with ``p^T A p < 0`` was met),
      ``min_curvature`` (smallest ``p^T A p / p^T p`` seen).

    Example:
      >>> import jax.numpy as jnp
      >>> A = jnp.diag(jnp.array([2.0, -1.0]))                 # indefinite
      >>> v, info = cg_solve(lambda u: A @ u, jnp.array([2.0, 3.0]), steps=2)
      >>> v.round(5).tolist(), bool(info["negative_curvature"]), int(info["steps"])
      ([1.0, -3.0], True, 2)
    """
    length, active = _steps_and_mask(steps, max_steps)
    return _cg(matvec, b, length=length, active=active, tol=tol, init=init, guard=guard,
               spd=False)


def _cg(matvec, b, *, length, active, tol, init, guard, spd, while_loop=False, maxiter=None):
    dtype = b.dtype
    eps = _eps(dtype)
    guard = jnp.sqrt(eps) if guard is None else guard
    bb, v, r, rs = _cg_state(matvec, b, init)
    # Without an explicit tol, iterate down to rounding level (as the original CG did).
    target = (eps**2) * bb if tol is None else jnp.maximum((tol**2) * bb, (eps**2) * bb)
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
            return (k < maxiter) & alive & (rs_ > target) & jnp.isfinite(rs_)

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
    res = _true_residual(matvec, v, b)
    tol_status = _default_tol(dtype) if tol is None else tol
    status = _status(res, tol_status, brk, neg, neg_is_error=spd)
    status = jnp.where(jnp.all(jnp.isfinite(v)), status, DIVERGED)
    return v, _info(res, k, status, negative_curvature=neg, min_curvature=min_curv)


def damped_solve(matvec, b, *, eps, maxiter=None, tol=None, init=None):
    r"""Solve ``(A + eps I) v = b`` by CG to a relative tolerance, checking definiteness.

    The damped system is symmetric positive definite when ``A`` is PSD (or merely has
    ``lambda_min > -eps``). A direction with ``p^T (A + eps I) p <= 0`` proves it is not: that
    is reported as ``status = "negative_curvature"`` (with the smallest curvature seen in
    ``info["min_curvature"]``; the iteration continues as in :func:`cg_solve`, so ``v`` is
    still the solve of the indefinite system when it is nonsingular). Stops when the
    residual falls below ``tol * |b|`` -- checked against the true residual ``b - A v`` (one
    extra ``matvec``, restarting CG from it when the running estimate was wrong) -- or
    after ``maxiter`` iterations (a ``lax.while_loop``: not reverse-differentiable).

    Args:
      matvec: ``v -> A v`` (``A`` symmetric, typically PSD).
      b: right-hand side (1-D).
      eps: damping (may be traced).
      maxiter: iteration cap (static int; default ``n``).
      tol: relative residual tolerance (default ``1e-6`` in float32, ``1e-12`` in float64).
      init: optional initial guess (warm start).

    Returns:
      ``(v, info)`` as in :func:`cg_solve`.

    Example:
      >>> import jax.numpy as jnp
      >>> v, info = damped_solve(lambda u: u, jnp.ones(2), eps=1.0)
      >>> v.tolist(), status_name(info["status"])
      ([0.5, 0.5], 'converged')
    """
    n = b.shape[0]
    maxiter = n if maxiter is None else _checks.check_steps(maxiter, "maxiter")
    tol = _default_tol(b.dtype) if tol is None else tol
    # No relative breakdown guard: with a tiny eps on a singular H the null directions have
    # curvature eps, far below sqrt(machine eps) * |H|, and must still be stepped along.
    return _cg(lambda u: matvec(u) + eps * u, b, length=None, active=None, tol=tol, init=init,
               guard=0.0, spd=True, while_loop=True, maxiter=maxiter)


# ---------------------------------------------------------------------------------------------
# Minimum-norm least squares for singular symmetric systems
# ---------------------------------------------------------------------------------------------


def minres_solve(matvec, b, *, steps, max_steps=None, tol=None, init=None):
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
      ``(v, info)``; ``info["residual"]`` is ``|A v - b| / |b|`` (for an inconsistent ``b``
      the least-squares residual, not an error), ``info["normal_residual"]`` is
      ``|A (A v - b)| / |A b|`` (zero at a least-squares solution), which ``status`` uses.

    Example:
      >>> import jax.numpy as jnp
      >>> A = jnp.diag(jnp.array([2.0, -1.0, 0.0]))           # singular, indefinite
      >>> v, info = minres_solve(lambda u: A @ u, jnp.array([2.0, 3.0, 5.0]), steps=3)
      >>> v.round(5).tolist(), status_name(info["status"])
      ([1.0, -3.0, 0.0], 'converged')
    """
    length, active = _steps_and_mask(steps, max_steps)
    dtype = b.dtype
    eps = _eps(dtype)
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
    small = jnp.sqrt(eps) * scale
    alive0 = (beta > tiny) & (alpha > small)
    # Early stop at rounding level by default: the estimates bottom out at ~10-50 eps.
    rel_tol = 100.0 * eps if tol is None else tol
    # (x, u, v, w, alpha, phibar, rhobar, alive, k)
    state = (jnp.zeros_like(b), u, av, av, alpha, beta, alpha, alive0, jnp.asarray(0, jnp.int32))
    anorm = scale

    def body(carry, j):
        x, u, v, w, alpha, phibar, rhobar, alive, k = carry
        run = alive if active is None else alive & (j < active)
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
        keep = lambda new, old: jnp.where(run, new, old)  # noqa: E731
        carry = (keep(x_n, x), keep(u_new, u), keep(v_new, v), keep(w_n, w),
                 keep(alpha_new, alpha), keep(phibar_n, phibar), keep(rhobar_n, rhobar),
                 alive & ~(run & done), k + run.astype(jnp.int32))
        return carry, None

    beta_b = beta
    state, _ = lax.scan(body, state, jnp.arange(length))
    x, k = state[0] + x0, state[8]
    r = matvec(x) - b
    nb = jnp.linalg.norm(b)
    res = jnp.linalg.norm(r) / jnp.where(nb > 0, nb, 1.0)
    ab = jnp.linalg.norm(matvec(b))
    normal = jnp.linalg.norm(matvec(r)) / jnp.where(ab > 0, ab, 1.0)
    tol_status = jnp.sqrt(eps) if tol is None else tol
    status = jnp.where(normal <= tol_status, CONVERGED, MAX_STEPS)
    status = jnp.where(jnp.all(jnp.isfinite(x)), status, DIVERGED)
    return x, _info(res, k, status, normal_residual=normal)


# ---------------------------------------------------------------------------------------------
# Checks that work under jit
# ---------------------------------------------------------------------------------------------


def check_solution(info, *, tol=None, allow=("converged", "max_steps")):
    r"""``checkify.check`` that a solve's ``info`` is usable; works under ``jax.jit``.

    Inside ``jax.jit(checkify.checkify(f))`` a failed check is returned as an error (raise it
    with ``err.throw()``); called eagerly outside ``checkify`` it raises at once.

    Args:
      info: an ``info`` dict from a solver or a hypergradient estimator.
      tol: optional bound on ``info["residual"]``.
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
    status = info["status"]
    ok = jnp.zeros(jnp.shape(status), bool)
    for code in codes:
        ok = ok | (status == code)
    checkify.check(jnp.all(ok), "solver status {s} is not one of " + str(tuple(codes))
                   + " (codes index bilevel_lib.linalg.STATUS); residual {r}", s=status,
                   r=info["residual"])
    checkify.check(jnp.all(jnp.isfinite(info["residual"])), "solver residual is not finite")
    if tol is not None:
        checkify.check(jnp.all(info["residual"] <= tol), "residual {r} exceeds tol",
                       r=info["residual"])
