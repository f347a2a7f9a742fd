r"""Hessian-vector products in the three autodiff modes of the tutorial.

For a scalar ``fun(y)`` and a direction ``v``, ``H v`` (``H = nabla^2 fun(y)``) costs a small
constant times one gradient in every mode; they differ in memory (tutorial, "HVP"):

* ``"rr"`` reverse-over-reverse: ``grad(y -> <grad fun(y), v>)`` -- stores two reverse tapes;
* ``"rf"`` reverse-over-forward: ``grad(y -> jvp(fun, y, v))``;
* ``"fr"`` forward-over-reverse: ``jvp(grad fun, y, v)`` -- the cheapest; the default, and what
  :mod:`bilevel_lib.hypergrad` uses.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["hvp", "HVP_MODES"]

HVP_MODES = ("rr", "rf", "fr")


def _tree_vdot(a, b):
    return sum(jnp.vdot(u, w) for u, w in zip(jax.tree_util.tree_leaves(a),
                                               jax.tree_util.tree_leaves(b), strict=True))


def hvp(fun, y, v, *, mode="fr"):
    r"""Hessian-vector product ``nabla^2 fun(y) v`` (pytrees allowed).

    Args:
      fun: ``y -> scalar``.
      y: point (array or pytree).
      v: direction, same structure as ``y``.
      mode: ``"fr"`` (forward-over-reverse, default), ``"rf"`` or ``"rr"``.

    Returns:
      A pytree like ``y``.

    Example:
      >>> import jax.numpy as jnp
      >>> f = lambda y: jnp.sum(y ** 3) / 6.0         # Hessian diag(y)
      >>> [hvp(f, jnp.array([1.0, 2.0]), jnp.ones(2), mode=m).tolist() for m in HVP_MODES]
      [[1.0, 2.0], [1.0, 2.0], [1.0, 2.0]]
    """
    if mode == "fr":
        return jax.jvp(jax.grad(fun), (y,), (v,))[1]
    if mode == "rf":
        return jax.grad(lambda yy: jax.jvp(fun, (yy,), (v,))[1])(y)
    if mode == "rr":
        return jax.grad(lambda yy: _tree_vdot(jax.grad(fun)(yy), v))(y)
    raise ValueError(f"`mode` must be one of {HVP_MODES}; got {mode!r}.")
