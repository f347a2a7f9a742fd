r"""Ridge regression as a bilevel problem: the tutorial's worked example with a closed form.

Outer parameter ``x = lambda`` (the ridge penalty, a scalar array), inner parameter ``y = w``:

.. math::

    f(\lambda, w) = \tfrac{1}{2n}\|Xw - y\|^2 + \tfrac{\lambda}{2}\|w\|^2,\qquad
    F(\lambda, w) = \tfrac{1}{2n'}\|X'w - y'\|^2,

    w(\lambda) = (X^\top X/n + \lambda I)^{-1} X^\top y / n,\qquad
    \nabla F(\lambda) = -w(\lambda)^\top (X^\top X/n + \lambda I)^{-1}
        X'^\top (X'w(\lambda)-y')/n'.

With ``d > n`` and ``lambda = 0`` the inner Hessian ``X^T X / n`` is singular: the smallest
example of an overparameterized inner problem. :func:`ridge_gd` gives the iterates of gradient
descent on the inner problem in closed form, for checking iterative (ITD/AID) estimates.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .. import _checks, quadratic, spectral

__all__ = [
    "RidgeData",
    "make_ridge",
    "ridge_objectives",
    "ridge_solution",
    "ridge_hypergrad",
    "ridge_gd",
]


class RidgeData(NamedTuple):
    """Training split ``(X, y)`` for the inner problem, validation ``(X_val, y_val)``."""

    X: jax.Array
    y: jax.Array
    X_val: jax.Array
    y_val: jax.Array


def make_ridge(key, *, n_train=20, n_val=30, dim=10, noise=0.5, dtype=jnp.float32):
    """A synthetic linear-regression problem ``y = X w_true + noise``.

    ``w_true``, the rows of ``X`` and ``X_val`` and the noise are independent standard normal
    draws (the noise scaled by ``noise``), taken from one call to ``jax.random.normal`` and
    built by one jitted function, so a new problem size costs one compilation.

    Example:
      >>> import jax
      >>> data = make_ridge(jax.random.PRNGKey(0), n_train=5, n_val=7, dim=3)
      >>> data.X.shape, data.y_val.shape
      ((5, 3), (7,))
    """
    for name, v in (("n_train", n_train), ("n_val", n_val), ("dim", dim)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"`{name}` must be a positive int; got {v!r}.")
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(f"`dtype` must be a floating dtype; got {dtype!r}.")
    if _checks.is_concrete(noise) and not (np.isfinite(noise) and noise >= 0):
        raise ValueError(f"`noise` must be finite and >= 0; got {noise!r}.")
    return _make_ridge(key, noise, n_train=n_train, n_val=n_val, dim=dim, dtype=jnp.dtype(dtype))


@partial(jax.jit, static_argnames=("n_train", "n_val", "dim", "dtype"))
def _make_ridge(key, noise, *, n_train, n_val, dim, dtype):
    sizes = (dim, n_train * dim, n_val * dim, n_train, n_val)
    z = jax.random.normal(key, (sum(sizes),), dtype)
    w_true, x_flat, x_val_flat, eps, eps_val = jnp.split(z, np.cumsum(sizes)[:-1])
    X = x_flat.reshape(n_train, dim)
    X_val = x_val_flat.reshape(n_val, dim)
    y = X @ w_true + noise * eps
    y_val = X_val @ w_true + noise * eps_val
    return RidgeData(X, y, X_val, y_val)


def ridge_objectives(data: RidgeData):
    """``(inner, outer)`` with signature ``(lam, w) -> scalar`` (``lam`` a scalar array).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> inner, outer = ridge_objectives(make_ridge(jax.random.PRNGKey(0), dim=3))
      >>> float(inner(jnp.array(0.0), jnp.zeros(3))) > 0
      True
    """
    n, n_val = data.X.shape[0], data.X_val.shape[0]

    def inner(lam, w):
        return 0.5 / n * jnp.sum((data.X @ w - data.y) ** 2) + 0.5 * lam * jnp.sum(w**2)

    def outer(lam, w):
        return 0.5 / n_val * jnp.sum((data.X_val @ w - data.y_val) ** 2)

    return inner, outer


def _check_lam(lam):
    """``lam >= 0`` when concrete: for ``lam < 0`` the inner problem may be unbounded below."""
    if _checks.is_concrete(lam):
        # NumPy, not jnp: under an enclosing jit even a concrete value's jnp ops are staged.
        arr = np.asarray(lam)
        if not np.issubdtype(arr.dtype, np.number) or arr.ndim != 0:
            raise TypeError(f"`lam` must be a real scalar; got {lam!r}.")
        if not bool(np.isfinite(arr)) or float(arr) < 0:
            raise ValueError(f"`lam` must be finite and >= 0; got {lam!r}.")


def ridge_solution(data: RidgeData, lam):
    """The inner solution ``w(lambda)`` in closed form (``lambda > 0``, or pinv at 0).

    At ``lambda = 0`` with ``d > n`` the inner problem has a whole affine space of solutions;
    this returns the one of minimum norm, the one gradient descent from ``w = 0`` reaches
    (:func:`bilevel_lib.quadratic.closest_solution`, whose pseudo-inverse drops the
    eigenvalues below :func:`bilevel_lib.linalg.zero_threshold`).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> data = make_ridge(jax.random.PRNGKey(0), n_train=5, dim=3)
      >>> inner, _ = ridge_objectives(data)
      >>> lam = jnp.array(0.1)
      >>> g = jax.grad(inner, argnums=1)(lam, ridge_solution(data, lam))
      >>> bool(jnp.max(jnp.abs(g)) < 1e-5)
      True
    """
    _check_lam(lam)
    n, d = data.X.shape
    a = data.X.T @ data.X / n + lam * jnp.eye(d, dtype=data.X.dtype)
    return quadratic.closest_solution(a, data.X.T @ data.y / n, jnp.zeros(d, data.X.dtype))


def ridge_hypergrad(data: RidgeData, lam):
    r"""The tutorial's closed-form hypergradient ``dF/dlambda`` (pinv where singular).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> data = make_ridge(jax.random.PRNGKey(0), dim=3)
      >>> g = ridge_hypergrad(data, 0.1)
      >>> g.shape
      ()
    """
    _check_lam(lam)
    n, d = data.X.shape
    n_val = data.X_val.shape[0]
    a = data.X.T @ data.X / n + lam * jnp.eye(d, dtype=data.X.dtype)
    # A^+ b as the minimum-norm solution of A v = b: the core's pinv and zero threshold.
    zero = jnp.zeros(d, data.X.dtype)
    w = quadratic.closest_solution(a, data.X.T @ data.y / n, zero)
    v = quadratic.closest_solution(a, data.X_val.T @ (data.X_val @ w - data.y_val) / n_val, zero)
    return -w @ v


def ridge_gd(data: RidgeData, lam, w0, *, steps, lr):
    r"""``steps`` iterations of gradient descent on the inner ridge objective, in closed form.

    With ``A = X^T X / n + lambda I`` and ``b = X^T y / n`` the inner gradient is ``A w - b``,
    so ``K`` steps of size ``alpha`` from ``w_0`` give

    .. math:: w_K = w_0 - \alpha \sum_{j<K} (I - \alpha A)^j (A w_0 - b)
                  = w_0 - U\, g_K(\Lambda)\, U^\top (A w_0 - b),

    with ``g_K`` the K-term Neumann filter (:func:`bilevel_lib.spectral.neumann_filter`) on the
    eigenvalues of ``A``. Valid also when ``A`` is singular (``lambda = 0``, ``d > n``): then
    ``w_K`` tends to the solution closest to ``w_0``. ``steps`` may be traced (e.g. ``vmap``-ed
    over K), since it only enters as an exponent.

    Args:
      data: a :class:`RidgeData`.
      lam: the penalty ``lambda >= 0``.
      w0: the starting point, shape ``(d,)``.
      steps: the number of steps K >= 0 (int, or a traced integer array).
      lr: the step size alpha > 0 (GD converges for ``alpha < 2 / lambda_max(A)``).

    Returns:
      ``w_K``, shape ``(d,)``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> data = make_ridge(jax.random.PRNGKey(0), n_train=5, dim=3)
      >>> w1 = ridge_gd(data, 0.1, jnp.zeros(3), steps=1, lr=0.5)   # one step from 0: alpha b
      >>> bool(jnp.allclose(w1, 0.5 * data.X.T @ data.y / 5, atol=1e-6))
      True
    """
    _check_lam(lam)
    _checks.check_positive(lr, "lr")
    if _checks.is_concrete(steps):
        if isinstance(steps, bool) or not np.issubdtype(np.asarray(steps).dtype, np.integer):
            raise TypeError(f"`steps` must be an integer; got {steps!r}.")
        if int(np.min(np.asarray(steps))) < 0:
            raise ValueError(f"`steps` must be >= 0; got {steps!r}.")
    n, d = data.X.shape
    w0 = jnp.asarray(w0, data.X.dtype)
    if w0.shape != (d,):
        raise ValueError(f"`w0` must have shape ({d},); got {w0.shape}.")
    a = data.X.T @ data.X / n + lam * jnp.eye(d, dtype=data.X.dtype)
    mu, vecs = jnp.linalg.eigh(a)
    g = spectral.neumann_filter(mu, steps=steps, lr=lr)
    return w0 - vecs @ (g * (vecs.T @ (a @ w0 - data.X.T @ data.y / n)))
