r"""The one descent loop: ``z <- z - step_j * direction(z, j)``, as one ``lax.scan``.

Gradient descent, Newton's method, inexact hypergradient descent (a step-dependent estimator)
and stochastic fixed-point iterations with decreasing steps are all this loop with another
``direction`` and step; :func:`descend` runs each of them, with the book's conventions for a
sweep over the step count (a static ``length`` and a traced number of ``active`` steps).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from . import _checks

__all__ = ["descend"]


def descend(direction, z0, *, lr, length, active=None, trace=False):
    r"""``length`` steps of ``z_{j+1} = z_j - step_j\, d(z_j, j)``; steps ``j >= active`` no-op.

    .. math:: z_{j+1} = \begin{cases} z_j - \eta_j\, d(z_j, j) & j < \text{active} \\
              z_j & \text{otherwise} \end{cases},\qquad
              \eta_j = \text{lr} \ \text{or}\ \text{lr}(j)

    Args:
      direction: ``direction(z, j) -> pytree like z`` (jit-able; ``j`` a traced int32): a
        gradient, a Newton step ``H^{-1} g``, a hypergradient estimate, a stochastic
        direction drawn with ``jax.random.fold_in(key, j)``.
      z0: the starting point (a pytree of arrays).
      lr: the step size (a number or array), or a schedule ``lr(j) -> step``.
      length: the static number of loop steps (Python int >= 0), or ``None``: then the loop
        runs exactly ``active`` steps, a traced count allowed (a ``lax.while_loop``: a sweep
        that ``lax.map``-s over step counts pays for each count once, not for the longest
        every time; it cannot be reverse-differentiated, so keep a static ``length`` for
        unrolled differentiation).
      active: optional number of steps that move ``z`` (may be traced, e.g. ``vmap``-ped over
        a sweep of step counts with one ``length``); the inactive steps leave ``z`` unchanged
        and record a zero direction. Default: all ``length``. Required when ``length`` is
        ``None``.
      trace: also return, for every step, the iterate it started from and the direction it
        applied (zero for inactive steps).

    Returns:
      ``z_length``; with ``trace=True``, ``(z_length, (zs, ds))`` with leading axis
      ``length``.

    Example:
      >>> import jax.numpy as jnp
      >>> grad = lambda z, j: 2.0 * z                     # f(z) = z^2
      >>> float(descend(grad, jnp.array(1.0), lr=0.25, length=3))   # halves every step
      0.125
      >>> z, (zs, ds) = descend(grad, jnp.array(1.0), lr=0.25, length=3, active=2, trace=True)
      >>> float(z), zs.tolist(), ds.tolist()
      (0.25, [1.0, 0.5, 0.25], [2.0, 1.0, 0.0])
      >>> import jax
      >>> jax.lax.map(lambda n: descend(grad, jnp.array(1.0), lr=0.25, length=None, active=n),
      ...             jnp.arange(3)).tolist()                   # 0, 1 and 2 steps
      [1.0, 0.5, 0.25]
    """
    _checks.check_callable(direction, "direction")
    step_size = lr if callable(lr) else (lambda j: lr)
    if length is None:
        if active is None:
            raise TypeError("descend: `active` (the number of steps) is required when "
                            "`length` is None.")
        if trace:
            raise ValueError("descend: `trace=True` needs a static `length` (the trace's "
                             "leading axis).")
        if _checks.is_concrete(active):
            # a known count is the static loop below (a scan: reverse-differentiable)
            length, active = _checks.check_steps(int(active), "active"), None
        else:
            def step(j, z):
                eta = step_size(j)
                return jax.tree_util.tree_map(lambda a, b: a - eta * b, z, direction(z, j))

            # a traced bound makes this a while_loop that runs exactly `active` steps
            return lax.fori_loop(0, jnp.asarray(active, jnp.int32), step, z0)
    length = _checks.check_steps(length, "length")

    def body(z, j):
        d = direction(z, j)
        if active is not None:
            on = j < active
            d = jax.tree_util.tree_map(lambda a: jnp.where(on, a, jnp.zeros_like(a)), d)
        eta = step_size(j)
        z_next = jax.tree_util.tree_map(lambda a, b: a - eta * b, z, d)
        return z_next, ((z, d) if trace else None)

    z, records = lax.scan(body, z0, jnp.arange(length, dtype=jnp.int32))
    return (z, records) if trace else z
