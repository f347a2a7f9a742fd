r"""Ridge regression as a bilevel problem: the tutorial's worked example with a closed form.

Outer parameter ``x = lambda`` (the ridge penalty, a scalar array), inner parameter ``y = w``:

.. math::

    f(\lambda, w) = \tfrac{1}{2n}\|Xw - y\|^2 + \tfrac{\lambda}{2}\|w\|^2,\qquad
    F(\lambda, w) = \tfrac{1}{2n'}\|X'w - y'\|^2,

    w(\lambda) = (X^\top X/n + \lambda I)^{-1} X^\top y / n,\qquad
    \nabla F(\lambda) = -w(\lambda)^\top (X^\top X/n + \lambda I)^{-1} X'^\top (X'w(\lambda)-y')/n'.

With ``d > n`` and ``lambda = 0`` the inner Hessian ``X^T X / n`` is singular: the smallest
example of an overparameterized inner problem.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

__all__ = ["RidgeData", "make_ridge", "ridge_objectives", "ridge_solution", "ridge_hypergrad"]


class RidgeData(NamedTuple):
    """Training split ``(X, y)`` for the inner problem, validation ``(X_val, y_val)``."""

    X: jax.Array
    y: jax.Array
    X_val: jax.Array
    y_val: jax.Array


def make_ridge(key, *, n_train=20, n_val=30, dim=10, noise=0.5, dtype=jnp.float32):
    """A synthetic linear-regression problem ``y = X w_true + noise``.

    Example:
      >>> import jax
      >>> data = make_ridge(jax.random.PRNGKey(0), n_train=5, n_val=7, dim=3)
      >>> data.X.shape, data.y_val.shape
      ((5, 3), (7,))
    """
    for name, v in (("n_train", n_train), ("n_val", n_val), ("dim", dim)):
        if not isinstance(v, int) or v < 1:
            raise ValueError(f"`{name}` must be a positive int; got {v!r}.")
    k1, k2, k3, k4, k5 = jax.random.split(key, 5)
    w_true = jax.random.normal(k1, (dim,), dtype)
    X = jax.random.normal(k2, (n_train, dim), dtype)
    X_val = jax.random.normal(k3, (n_val, dim), dtype)
    y = X @ w_true + noise * jax.random.normal(k4, (n_train,), dtype)
    y_val = X_val @ w_true + noise * jax.random.normal(k5, (n_val,), dtype)
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


def ridge_solution(data: RidgeData, lam):
    """The inner solution ``w(lambda)`` in closed form (``lambda > 0``, or pinv at 0)."""
    n, d = data.X.shape
    a = data.X.T @ data.X / n + lam * jnp.eye(d, dtype=data.X.dtype)
    return jnp.linalg.pinv(a) @ (data.X.T @ data.y / n)


def ridge_hypergrad(data: RidgeData, lam):
    r"""The tutorial's closed-form hypergradient ``dF/dlambda`` (pinv where singular).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> data = make_ridge(jax.random.PRNGKey(0), dim=3)
      >>> g = ridge_hypergrad(data, 0.1)
      >>> g.shape
      ()
    """
    n, d = data.X.shape
    n_val = data.X_val.shape[0]
    a_pinv = jnp.linalg.pinv(data.X.T @ data.X / n + lam * jnp.eye(d, dtype=data.X.dtype))
    w = a_pinv @ (data.X.T @ data.y / n)
    return -w @ a_pinv @ (data.X_val.T @ (data.X_val @ w - data.y_val) / n_val)
