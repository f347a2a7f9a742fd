"""Loops shared by the core modules (private: the public versions are in ``blo``).

:func:`bilevel_lib.blo.inner_gd` is the public gradient-descent loop; the unrolled
hypergradient (:func:`bilevel_lib.hypergrad.unroll`) differentiates through the same loop with
two extras (data ``args`` and a forcing ``delta``), so both use this one.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax


def descend(inner, x, y0, lr, length, active, args=(), delta=None):
    """``length`` steps of ``y <- y - lr (grad_y f(x, y) + delta)``; steps ``>= active`` no-op.

    ``delta`` (zero) is a constant forcing whose gradient is minus the vector the unroll
    implicitly applies in place of ``H^{-1} dF/dy``.
    """
    grad_y = jax.grad(inner, argnums=1)

    def body(y_, j):
        dtype = jnp.result_type(*jax.tree_util.tree_leaves(y_))
        keep = 1.0 if active is None else (j < active).astype(dtype)
        g = grad_y(x, y_, *args)
        if delta is not None:
            g = jax.tree_util.tree_map(jnp.add, g, delta)
        return jax.tree_util.tree_map(lambda a, b: a - keep * lr * b, y_, g), None

    return lax.scan(body, y0, jnp.arange(length))[0]
