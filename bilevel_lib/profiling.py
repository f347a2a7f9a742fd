r"""Hessian-vector products in the three autodiff modes of the tutorial.

For a scalar ``fun(y)`` and a direction ``v``, ``H v`` (``H = nabla^2 fun(y)``) costs a small
constant times one gradient in every mode; they differ in memory (tutorial, "HVP"):

* ``"rr"`` reverse-over-reverse: ``grad(y -> <grad fun(y), v>)`` -- stores two reverse tapes;
* ``"rf"`` reverse-over-forward: ``grad(y -> jvp(fun, y, v))``;
* ``"fr"`` forward-over-reverse: ``jvp(grad fun, y, v)`` -- the cheapest; the default, and what
  :mod:`bilevel_lib.hypergrad` uses (:func:`bilevel_lib.linalg.hvp`, the one shared copy).

Two helpers measure what a jitted function costs, so that such claims can be checked rather
than quoted: :func:`temp_bytes` (the scratch memory XLA allocates for it, from the compiled
executable's ``memory_analysis``) and :func:`time_jitted` (the median wall-clock time of calls
after compilation).
"""

from __future__ import annotations

import statistics
import time

import jax
import jax.numpy as jnp

from . import _checks, linalg

__all__ = ["hvp", "HVP_MODES", "temp_bytes", "time_jitted"]

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
    if mode not in HVP_MODES:
        raise ValueError(f"`mode` must be one of {HVP_MODES}; got {mode!r}.")
    _checks.check_callable(fun, "fun")
    y_struct = jax.tree_util.tree_structure(y)
    v_struct = jax.tree_util.tree_structure(v)
    if y_struct != v_struct:
        raise ValueError(f"`v` must have the structure of `y`; got {v_struct} for {y_struct}.")
    for a, b in zip(jax.tree_util.tree_leaves(y), jax.tree_util.tree_leaves(v), strict=True):
        if jnp.shape(a) != jnp.shape(b):
            raise ValueError(
                f"`v` must have the shapes of `y`; got a leaf of shape {jnp.shape(b)} "
                f"for one of shape {jnp.shape(a)}."
            )
    if mode == "fr":
        return linalg.hvp(jax.grad(fun), y, v)
    if mode == "rf":
        return jax.grad(lambda yy: jax.jvp(fun, (yy,), (v,))[1])(y)
    return jax.grad(lambda yy: _tree_vdot(jax.grad(fun)(yy), v))(y)


def _compile(fn, args, name):
    _checks.check_callable(fn, name)
    jitted = fn if hasattr(fn, "lower") else jax.jit(fn)
    return jitted.lower(*args).compile()


def temp_bytes(fn, *args):
    r"""Bytes of temporary (scratch) buffers XLA allocates to run ``jax.jit(fn)(*args)``.

    Read from ``jax.jit(fn).lower(*args).compile().memory_analysis()``: the memory the compiled
    program needs besides its arguments and outputs -- e.g. the ``K`` stored iterates of a
    reverse-mode pass through ``K`` unrolled steps. Nothing is executed. Arrays closed over by
    ``fn`` are compile-time constants and not counted.

    Args:
      fn: a function of arrays (or an already ``jax.jit``-ed one).
      *args: example arguments (arrays, pytrees or ``jax.ShapeDtypeStruct``).

    Returns:
      An ``int``, or ``None`` where the backend reports no memory analysis.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> def tape(y):                          # reverse mode stores all 100 iterates
      ...     step = lambda c, _: (jnp.sin(c), None)
      ...     return jax.grad(lambda z: jnp.sum(jax.lax.scan(step, z, None, 100)[0]))(y)
      >>> temp_bytes(tape, jnp.zeros(1000)) >= 100 * 1000 * 4
      True
    """
    analysis = _compile(fn, args, "fn").memory_analysis()
    if analysis is None:
        return None
    return int(analysis.temp_size_in_bytes)


def time_jitted(fn, *args, repeats=7):
    r"""Median wall-clock seconds of ``jax.jit(fn)(*args)``, compilation excluded.

    Compiles once, runs once to warm up, then times ``repeats`` calls (each waits for its
    result with ``jax.block_until_ready``). The median is robust to a busy machine, but
    timings still depend on it: they belong in figures and prose, never in tests.

    Args:
      fn: a function of arrays (or an already ``jax.jit``-ed one).
      *args: its arguments.
      repeats: number of timed calls (int >= 1).

    Returns:
      The median time per call in seconds (a ``float``).

    Example:
      >>> import jax.numpy as jnp
      >>> time_jitted(jnp.sin, jnp.ones(10), repeats=3) > 0
      True
    """
    repeats = _checks.check_steps(repeats, "repeats", allow_zero=False)
    compiled = _compile(fn, args, "fn")
    jax.block_until_ready(compiled(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(compiled(*args))
        times.append(time.perf_counter() - start)
    return statistics.median(times)
