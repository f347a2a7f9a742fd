r"""Hypergradient estimators with one signature.

Every estimator is called as ``estimator(inner, outer, x, y, **options)`` and returns an
approximation of the total derivative of the outer objective at an inner point ``y``,

.. math::

    \frac{dF}{dx} = \partial_x F(x, y) + J^\top \partial_y F(x, y),
    \qquad H J = -B,\quad H = \partial^2_{yy} f,\quad B = \partial^2_{yx} f,

with a pytree of the same structure as ``x``. They differ only in the response Jacobian ``J``
they (implicitly) use, i.e. in how :math:`H^{-1}` is replaced:

* ``exact``: :math:`H^{+}` (Moore--Penrose, dense Hessian and ``eigh``);
* ``neumann``: :math:`\alpha\sum_{j<K}(I-\alpha H)^j` (K Hessian-vector products);
* ``damped``: :math:`(H+\epsilon I)^{-1}` (conjugate gradient on :math:`H+\epsilon I`);
* ``cg``: K steps of conjugate gradient on ``H`` (K Hessian-vector products);
* ``unroll``: differentiate K gradient steps from ``y`` (K steps, O(K) memory).

All estimators are pure, run under ``jax.jit`` (step counts are static Python ints), under
``jax.vmap`` over array-valued ``lr``/``eps`` (and over ``steps`` when a static ``max_steps``
is given), in float32 and float64, and accept pytrees for ``x`` and ``y``. Argument checks on
values (``lr > 0``) run only when the values are concrete; under ``jit`` they are the caller's
responsibility.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax
from jax.flatten_util import ravel_pytree

from . import _checks

__all__ = [
    "exact",
    "neumann",
    "damped",
    "cg",
    "unroll",
    "hessian_and_mixed",
    "response_jacobian",
    "conjugate_gradient",
]


_NEUMANN_MAX_GROWTH = 10.0

# ---------------------------------------------------------------------------------------------
# Shared machinery
# ---------------------------------------------------------------------------------------------


def _validate(inner, outer, x, y) -> None:
    _checks.check_float_tree(x, "x")
    _checks.check_float_tree(y, "y")
    _checks.check_objective(inner, "inner", x, y)
    _checks.check_objective(outer, "outer", x, y)


def _flat_grad_y(inner, y):
    """Return ``(y_flat, g)`` with ``g(x, y_flat)`` the flattened inner gradient in y."""
    y_flat, unravel = ravel_pytree(y)

    def grad_y(x_, y_flat_):
        return ravel_pytree(jax.grad(inner, argnums=1)(x_, unravel(y_flat_)))[0]

    return y_flat, grad_y


def _assemble(inner, outer, x, y, solve):
    r"""``dF/dx = F_x - B^T v`` with ``v = solve(hvp, F_y)``, ``v`` approximating ``H^{-1} F_y``.

    ``dy/dx = -H^{-1} B`` so ``(dy/dx)^T F_y = -B^T H^{-1} F_y``; ``B^T v`` is one VJP of the
    map ``x -> grad_y f(x, y)``, so nothing of size ``dim(x) * dim(y)`` is ever formed.
    """
    f_x, f_y = jax.grad(outer, argnums=(0, 1))(x, y)
    f_y_flat = ravel_pytree(f_y)[0]
    y_flat, grad_y = _flat_grad_y(inner, y)

    def hvp(v):
        return jax.jvp(lambda yy: grad_y(x, yy), (y_flat,), (v,))[1]

    v = solve(hvp, f_y_flat, y_flat, grad_y)
    _, vjp_x = jax.vjp(lambda xx: grad_y(xx, y_flat), x)
    (b_t_v,) = vjp_x(v.astype(y_flat.dtype))
    return jax.tree_util.tree_map(lambda a, b: a - b, f_x, b_t_v)


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


def _descend(inner, x, y0, lr, length, active):
    """``length`` steps of ``y <- y - lr grad_y f(x, y)``; steps ``j >= active`` are no-ops."""
    grad_y = jax.grad(inner, argnums=1)

    def body(y_, j):
        keep = 1.0 if active is None else (j < active).astype(_dtype_of(y_))
        g = grad_y(x, y_)
        return jax.tree_util.tree_map(lambda a, b: a - keep * lr * b, y_, g), None

    return lax.scan(body, y0, jnp.arange(length))[0]


def _raise_if_diverged(result, what: str, hint: str):
    if _checks._is_concrete(result):
        leaves = jax.tree_util.tree_leaves(result)
        if not all(bool(jnp.all(jnp.isfinite(leaf))) for leaf in leaves):
            raise FloatingPointError(f"{what} is not finite. {hint}")
    return result


# ---------------------------------------------------------------------------------------------
# Dense helpers (small problems, references)
# ---------------------------------------------------------------------------------------------


def hessian_and_mixed(inner, x, y):
    r"""Dense inner Hessian ``H`` and mixed partials ``B`` in flattened coordinates.

    .. math:: H = \partial^2 f / \partial y \partial y^\top,\qquad
              B = \partial^2 f / \partial y \partial x^\top

    Args:
      inner: ``inner(x, y) -> scalar``.
      x, y: outer and inner parameters (arrays or pytrees; flattened with ``ravel_pytree``).

    Returns:
      ``(H, B)`` with shapes ``(n_y, n_y)`` and ``(n_y, n_x)``.

    Example:
      >>> import jax.numpy as jnp
      >>> inner = lambda x, y: 0.5 * jnp.sum((y - x) ** 2)
      >>> H, B = hessian_and_mixed(inner, jnp.zeros(2), jnp.zeros(2))
      >>> H.tolist(), B.tolist()
      ([[1.0, 0.0], [0.0, 1.0]], [[-1.0, -0.0], [-0.0, -1.0]])
    """
    _checks.check_float_tree(x, "x")
    _checks.check_float_tree(y, "y")
    _checks.check_objective(inner, "inner", x, y)
    x_flat, unravel_x = ravel_pytree(x)
    y_flat, grad_y = _flat_grad_y(inner, y)
    hess = jax.jacfwd(lambda yy: grad_y(x, yy))(y_flat)
    mixed = jax.jacfwd(lambda xx: grad_y(unravel_x(xx), y_flat))(x_flat)
    return 0.5 * (hess + hess.T), mixed


def _pinv_symmetric(hess, rtol):
    lam, vecs = jnp.linalg.eigh(hess)
    if rtol is None:
        rtol = hess.shape[0] * jnp.finfo(hess.dtype).eps
    cutoff = rtol * jnp.max(jnp.abs(lam))
    keep = jnp.abs(lam) > cutoff
    inv = jnp.where(keep, 1.0 / jnp.where(keep, lam, 1.0), 0.0)
    return (vecs * inv) @ vecs.T


def response_jacobian(inner, x, y, *, rtol=None):
    r"""The canonical (minimum-Frobenius-norm) response Jacobian ``J* = -H^+ B``.

    Among all ``J`` with ``H J = -B`` (any ``J + N`` with ``range(N) ⊆ null(H)`` is valid when
    ``H`` is singular), ``J*`` has the smallest Frobenius norm (paper, App. B.1).

    Args:
      inner: ``inner(x, y) -> scalar``.
      x, y: outer and inner parameters.
      rtol: eigenvalues below ``rtol * max|lambda|`` count as zero
        (default ``n_y * machine epsilon``).

    Returns:
      Array of shape ``(n_y, n_x)`` in flattened coordinates.

    Example:
      >>> import jax.numpy as jnp
      >>> phi = jnp.array([[1.0, 0.0, 1.0]])          # one learned point, 3 features
      >>> inner = lambda x, w: 0.5 * jnp.sum((phi @ w - x) ** 2)
      >>> J = response_jacobian(inner, jnp.zeros(1), jnp.zeros(3))
      >>> bool(jnp.allclose(J, jnp.linalg.pinv(phi), atol=1e-6))
      True
    """
    hess, mixed = hessian_and_mixed(inner, x, y)
    return -_pinv_symmetric(hess, rtol) @ mixed


# ---------------------------------------------------------------------------------------------
# Estimators
# ---------------------------------------------------------------------------------------------


def exact(inner, outer, x, y, *, rtol=None):
    r"""Hypergradient with the canonical response Jacobian ``J* = -H^+ B`` (dense reference).

    .. math:: \frac{dF}{dx} = \partial_x F - B^\top H^{+}\, \partial_y F

    The Hessian is formed densely and pseudo-inverted by an eigendecomposition, so this is for
    problems with up to a few thousand inner parameters; it is the reference every other
    estimator is measured against. When ``H`` is invertible this is the implicit-function
    hypergradient; when it is singular it is the one Theorem 3.1 is about.

    Args:
      inner: ``inner(x, y) -> scalar`` (inner objective f).
      outer: ``outer(x, y) -> scalar`` (outer objective F).
      x: outer parameters (array or pytree).
      y: inner parameters, normally an (approximate) inner solution.
      rtol: relative cut-off for zero eigenvalues (default ``n_y * eps``).

    Returns:
      A pytree shaped like ``x``.

    Example:
      >>> import jax.numpy as jnp
      >>> inner = lambda x, y: 0.5 * jnp.sum((y - x) ** 2)   # y*(x) = x
      >>> outer = lambda x, y: 0.5 * jnp.sum(y ** 2)         # F(x) = |x|^2 / 2
      >>> exact(inner, outer, jnp.array([1.0, 2.0]), jnp.array([1.0, 2.0])).tolist()
      [1.0, 2.0]
    """
    _validate(inner, outer, x, y)

    def solve(hvp, rhs, y_flat, grad_y):
        hess = jax.jacfwd(lambda yy: grad_y(x, yy))(y_flat)
        return _pinv_symmetric(0.5 * (hess + hess.T), rtol) @ rhs

    return _assemble(inner, outer, x, y, solve)


def neumann(inner, outer, x, y, *, steps, lr, max_steps=None):
    r"""Hypergradient with the K-term truncated Neumann series for the inverse Hessian.

    .. math:: H^{-1} \approx \alpha \sum_{j=0}^{K-1} (I - \alpha H)^j

    Spectrally, ``1/lambda`` is replaced by ``(1 - (1 - alpha*lambda)^K) / lambda`` (and by
    ``alpha*K`` on the null space). The series converges to ``H^+`` on ``range(H)`` iff
    ``0 < alpha * lambda_max < 2``; past that it diverges geometrically. Guard: for a PSD
    ``H`` and a convergent step, ``|(I - alpha H)^K g| <= |g|``; eagerly (outside ``jit``) a
    growth by more than a factor 10, or a non-finite result, raises ``FloatingPointError``.
    Under ``jit`` nothing can be raised: choose ``lr`` with
    :func:`bilevel_lib.spectral.max_eigenvalue`.

    Args:
      inner, outer, x, y: as in :func:`exact`.
      steps: number of terms K (Python int >= 0; or, with ``max_steps``, a traced int).
      lr: the step size alpha > 0 (may be a traced scalar, e.g. under ``vmap``).
      max_steps: optional static upper bound; when given, ``steps`` may be traced
        (terms ``j >= steps`` are masked), so a sweep over K is one ``vmap``.

    Returns:
      A pytree shaped like ``x``.

    Example:
      >>> import jax.numpy as jnp
      >>> inner = lambda x, y: 0.5 * jnp.sum(2.0 * (y - x) ** 2)   # H = 2 I
      >>> outer = lambda x, y: jnp.sum(y)
      >>> x = y = jnp.ones(1)
      >>> # alpha = 0.25, K = 2: 0.25 * (1 + 0.5) * 2 = 0.75 of the exact hypergradient 1.
      >>> neumann(inner, outer, x, y, steps=2, lr=0.25).tolist()
      [0.75]
    """
    _validate(inner, outer, x, y)
    length, active = _steps_and_mask(steps, max_steps)
    _checks.check_positive(lr, "lr")

    def solve(hvp, rhs, *_):
        def body(carry, j):
            acc, p = carry
            keep = True if active is None else j < active
            acc = acc + jnp.where(keep, p, 0.0)
            p = p - lr * hvp(p)
            return (acc, p), None

        (acc, p), _ = lax.scan(body, (jnp.zeros_like(rhs), rhs), jnp.arange(length))
        growth.append(jnp.linalg.norm(p) / jnp.maximum(jnp.linalg.norm(rhs), 1e-30))
        return lr * acc

    growth = []
    out = _assemble(inner, outer, x, y, solve)
    hint = (
        "The series diverges when lr * lambda_max(H) >= 2 (or H has negative eigenvalues): "
        "lower `lr` below 2 / bilevel_lib.spectral.max_eigenvalue(inner, x, y)."
    )
    if _checks._is_concrete(growth[0]) and float(jnp.max(growth[0])) > _NEUMANN_MAX_GROWTH:
        raise FloatingPointError(
            f"The Neumann series is diverging: |(I - lr H)^K dF/dy| grew by a factor "
            f"{float(jnp.max(growth[0])):.3g}. {hint}"
        )
    return _raise_if_diverged(out, "The Neumann hypergradient", hint)


def conjugate_gradient(matvec, b, *, steps, max_steps=None, guard=None):
    r"""``steps`` iterations of conjugate gradient on ``A v = b`` from ``v = 0``, with guards.

    For symmetric PSD ``A``. The iterates stay in the Krylov space
    ``span{b, Ab, A^2 b, ...}``. If the system is consistent (``b`` in ``range(A)``) they stay
    in ``range(A)`` and converge to the minimum-norm solution ``A^+ b``. Breakdown guard: an
    iteration whose search direction has curvature ``p^T A p <= guard * scale * p^T p`` or
    whose residual is zero freezes the iterate (no division by ~0, no NaN); later iterations
    then leave it unchanged. On an inconsistent singular system (``b`` outside ``range(A)``)
    this is what happens once the range part of the residual is solved: the next direction is
    (numerically) in the null space, and without the guard its step would be huge. ``scale``
    is the largest Rayleigh quotient seen so far, starting from that of a fixed random probe
    (about ``trace(A) / n``; one extra ``matvec``), so that even the first direction is judged
    against the operator's scale: a ``b`` in ``null(A)`` has rounding-noise curvature and is
    not divided by it.

    Args:
      matvec: ``v -> A v`` on flat vectors.
      b: right-hand side (1-D array).
      steps: iterations (Python int; or traced with static ``max_steps``).
      max_steps: optional static bound enabling a traced ``steps``.
      guard: relative curvature threshold (default ``sqrt(eps)`` of the dtype: 1.5e-8 in
        float64, 3.5e-4 in float32; directions with less relative curvature count as null).

    Returns:
      The approximate solution, same shape and dtype as ``b``.

    Example:
      >>> import jax.numpy as jnp
      >>> A = jnp.diag(jnp.array([2.0, 1.0, 0.0]))      # singular
      >>> conjugate_gradient(lambda v: A @ v, jnp.array([2.0, 3.0, 0.0]), steps=5).tolist()
      [1.0, 3.0, 0.0]
    """
    length, active = _steps_and_mask(steps, max_steps)
    eps = jnp.finfo(b.dtype).eps
    guard = jnp.sqrt(eps) if guard is None else guard
    tiny = jnp.finfo(b.dtype).tiny
    bb = jnp.vdot(b, b)
    # Reference curvature before any direction is seen. Without it the first direction's own
    # curvature is the reference: a b in null(A) (curvature = rounding noise ~ eps |A|) would
    # pass the guard and take a step of size ~1/eps.
    probe = jax.random.normal(jax.random.PRNGKey(0), b.shape, b.dtype)
    scale0 = jnp.vdot(probe, matvec(probe)) / jnp.vdot(probe, probe)

    def body(carry, j):
        v, r, p, rs, pp, scale, alive = carry
        ap = matvec(p)
        pap = jnp.vdot(p, ap)
        scale = jnp.maximum(scale, pap / jnp.maximum(pp, tiny))
        ok = alive & (pap > guard * scale * pp) & (rs > (eps**2) * bb) & (pap > 0)
        if active is not None:
            ok = ok & (j < active)
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
        # Once frozen (breakdown or converged), stay frozen; masked steps do not freeze.
        alive = alive & (ok | ((j >= active) if active is not None else False))
        return (v, r, p, rs, pp, scale, alive), None

    init = (jnp.zeros_like(b), b, b, bb, bb, jnp.maximum(scale0, 0.0).astype(b.dtype),
            jnp.asarray(True))
    (v, *_), _ = lax.scan(body, init, jnp.arange(length))
    return v


def cg(inner, outer, x, y, *, steps, max_steps=None):
    r"""Hypergradient with ``steps`` iterations of conjugate gradient on ``H v = dF/dy``.

    A Krylov (polynomial) approximation: after K steps ``v = p_K(H) dF/dy`` for the degree
    ``K - 1`` polynomial minimising the H-norm error, unlike Neumann's fixed polynomial. With a
    breakdown guard (see :func:`conjugate_gradient`) it never produces NaN on a singular ``H``.
    If ``dF/dy`` lies in ``range(H)`` it converges to the pinv answer (that of :func:`exact`);
    if not (the usual overparameterized case), it does *not*: the null-space component of the
    residual never shrinks and the iterate picks up null-space directions.

    Args:
      inner, outer, x, y: as in :func:`exact`.
      steps: CG iterations K (Python int >= 0, or traced with static ``max_steps``).
      max_steps: optional static bound enabling a traced ``steps``.

    Returns:
      A pytree shaped like ``x``.

    Example:
      >>> import jax.numpy as jnp
      >>> inner = lambda x, y: 0.5 * jnp.sum(jnp.array([1.0, 4.0]) * (y - x) ** 2)
      >>> outer = lambda x, y: jnp.sum(y)
      >>> x = y = jnp.zeros(2)
      >>> cg(inner, outer, x, y, steps=2).round(5).tolist()   # 2 eigenvalues: exact in 2 steps
      [1.0, 1.0]
    """
    _validate(inner, outer, x, y)
    _steps_and_mask(steps, max_steps)

    def solve(hvp, rhs, *_):
        return conjugate_gradient(hvp, rhs, steps=steps, max_steps=max_steps)

    return _assemble(inner, outer, x, y, solve)


def damped(inner, outer, x, y, *, eps, maxiter=None, tol=None, method="cg"):
    r"""Hypergradient with the damped inverse ``(H + eps I)^{-1}``.

    .. math:: \frac{dF}{dx} \approx \partial_x F - B^\top (H + \epsilon I)^{-1} \partial_y F

    This is the exact response Jacobian of the proximal inner objective
    ``f(x, y) + eps/2 |y - y'|^2`` (paper, App. D); spectrally ``1/lambda -> 1/(lambda + eps)``.

    The solve is matrix-free by default: conjugate gradient on the symmetric positive-definite
    ``H + eps I`` (``method="cg"``), stopped when the residual falls below ``tol * |b|`` or after
    ``maxiter`` iterations (default: the number of inner parameters, where CG is exact in exact
    arithmetic). ``method="dense"`` forms ``H`` and solves via ``eigh`` (small problems).

    Args:
      inner, outer, x, y: as in :func:`exact`.
      eps: damping > 0 (may be traced, e.g. under ``vmap``).
      maxiter: CG iteration cap (static int; default ``n_y``).
      tol: relative residual tolerance (default ``1e-6`` in float32, ``1e-12`` in float64).
      method: ``"cg"`` or ``"dense"``.

    Returns:
      A pytree shaped like ``x``.

    Example:
      >>> import jax.numpy as jnp
      >>> inner = lambda x, y: 0.5 * jnp.sum((y - x) ** 2)   # H = I
      >>> outer = lambda x, y: jnp.sum(y)
      >>> x = y = jnp.zeros(3)
      >>> damped(inner, outer, x, y, eps=1.0).tolist()     # 1 / (1 + 1)
      [0.5, 0.5, 0.5]
    """
    _validate(inner, outer, x, y)
    _checks.check_positive(eps, "eps")
    if method not in ("cg", "dense"):
        raise ValueError(f"`method` must be 'cg' or 'dense'; got {method!r}.")

    def solve(hvp, rhs, y_flat, grad_y):
        if method == "dense":
            hess = jax.jacfwd(lambda yy: grad_y(x, yy))(y_flat)
            lam, vecs = jnp.linalg.eigh(0.5 * (hess + hess.T))
            return vecs @ ((vecs.T @ rhs) / (lam + eps))
        n = rhs.shape[0]
        iters = n if maxiter is None else _checks.check_steps(maxiter, "maxiter")
        rel = (1e-6 if rhs.dtype == jnp.float32 else 1e-12) if tol is None else tol
        return _cg_until(lambda v: hvp(v) + eps * v, rhs, iters, rel)

    return _assemble(inner, outer, x, y, solve)


def _cg_until(matvec, b, maxiter, rel_tol):
    """CG with early stopping (``while_loop``): for SPD systems such as ``H + eps I``."""
    bb = jnp.vdot(b, b)
    target = (rel_tol**2) * bb

    def cond(state):
        _, _, _, rs, k = state
        return (k < maxiter) & (rs > target)

    def body(state):
        v, r, p, rs, k = state
        ap = matvec(p)
        alpha = rs / jnp.vdot(p, ap)
        v = v + alpha * p
        r = r - alpha * ap
        rs_new = jnp.vdot(r, r)
        p = r + (rs_new / rs) * p
        return v, r, p, rs_new, k + 1

    v, *_ = lax.while_loop(cond, body, (jnp.zeros_like(b), b, b, bb, 0))
    return v


def unroll(inner, outer, x, y, *, steps, lr, max_steps=None):
    r"""Hypergradient by differentiating through ``steps`` inner gradient-descent steps (ITD).

    .. math:: y_{k+1}(x) = y_k(x) - \alpha \nabla_y f(x, y_k(x)),\ y_0 = y,\qquad
              \widehat{\nabla} F = \frac{d}{dx} F(x, y_K(x))

    Reverse-mode through the loop stores the K iterates (memory O(K n_y)). Started at a
    stationary point of ``f`` this equals :func:`neumann` with the same ``steps`` and ``lr``
    exactly (paper, App. E); elsewhere it also carries the drift of the K steps.

    Args:
      inner, outer, x, y: as in :func:`exact` (``y`` is the starting point of the unroll).
      steps: K (Python int >= 0, or traced with static ``max_steps``).
      lr: inner step size alpha > 0 (may be traced).
      max_steps: optional static bound enabling a traced ``steps`` (masked steps).

    Returns:
      A pytree shaped like ``x``.

    Example:
      >>> import jax.numpy as jnp
      >>> inner = lambda x, y: 0.5 * jnp.sum(2.0 * (y - x) ** 2)
      >>> outer = lambda x, y: jnp.sum(y)
      >>> x = y = jnp.ones(1)                      # y is stationary: matches neumann
      >>> unroll(inner, outer, x, y, steps=2, lr=0.25).tolist()
      [0.75]
    """
    _validate(inner, outer, x, y)
    length, active = _steps_and_mask(steps, max_steps)
    _checks.check_positive(lr, "lr")
    def final_loss(x_):
        return outer(x_, _descend(inner, x_, y, lr, length, active))

    out = jax.grad(final_loss)(x)
    return _raise_if_diverged(
        out,
        "The unrolled hypergradient",
        "Unrolled gradient descent diverges when lr * lambda_max(H) >= 2: lower `lr`.",
    )


def _dtype_of(tree):
    return jnp.result_type(*jax.tree_util.tree_leaves(tree))
