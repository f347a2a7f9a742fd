r"""Cold-start and warm-start bilevel optimisation loops (the paper's Algorithms 1 and 2).

Both loops alternate ``inner_steps`` steps of an inner optax optimiser on ``inner(x, y)`` with
one outer optax step along ``hypergrad(inner, outer, x, y)``:

* **cold start** re-initialises ``y <- y0`` (and the inner optimiser state) before every outer
  step, so the inner solution is a function of ``x`` alone: with gradient descent on a convex
  quadratic it is the solution closest to ``y0`` (Lemma C.1), and the exact hypergradient then
  drives ``x`` to the outer solution closest to ``x0`` (Theorem 3.1);
* **warm start** carries ``y`` (and the inner optimiser state) over from the previous outer
  step, so ``y`` can remember every earlier ``x``; ``inner_steps=1`` is the "partial"
  warm start of alternating gradient steps, a large ``inner_steps`` the "full" one.

The whole run is one ``lax.scan`` over outer steps (with an inner ``lax.scan``), so it runs
under ``jax.jit`` and ``jax.vmap`` (e.g. over seeds, or over ``lr``/``eps`` closed into the
hypergradient with ``functools.partial``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from jax import lax

from . import _checks
from .hypergrad import _descend, _steps_and_mask

__all__ = ["cold_start", "warm_start", "inner_gd"]


def _check_optimizer(opt, name):
    if not (hasattr(opt, "init") and hasattr(opt, "update")):
        raise TypeError(
            f"`{name}` must be an optax.GradientTransformation (e.g. optax.sgd(1e-2)); "
            f"got {type(opt).__name__}."
        )


def _tree_norm(tree):
    # optax.global_norm is deprecated (and optax.tree.norm is missing from older optax).
    return jnp.sqrt(sum(jnp.sum(jnp.square(leaf)) for leaf in jax.tree_util.tree_leaves(tree)))


def _strip_solution(info):
    # The solve's vector is dim(y) per outer step: kept in the carry for warm_solve, but not
    # stacked into the trace.
    return {k: v for k, v in info.items() if k != "solution"}


def _run(inner, outer, x0, y0, *, hypergrad, outer_opt, inner_opt, outer_steps, inner_steps,
         warm, trace_y, log_every, hypergrad_info=False, key=None, sample=None,
         warm_solve=False):
    _checks.check_float_tree(x0, "x0")
    _checks.check_float_tree(y0, "y0")
    if sample is not None:
        _checks.check_callable(sample, "sample")
        if key is None:
            raise TypeError("`key` (a PRNG key) is required with `sample`.")
        inner_shape, outer_shape = jax.eval_shape(sample, key, 0)
        _checks.check_objective(inner, "inner", x0, y0, (inner_shape,))
        _checks.check_objective(outer, "outer", x0, y0, (outer_shape,))
    else:
        _checks.check_objective(inner, "inner", x0, y0)
        _checks.check_objective(outer, "outer", x0, y0)
    _checks.check_callable(hypergrad, "hypergrad")
    _check_optimizer(outer_opt, "outer_opt")
    _check_optimizer(inner_opt, "inner_opt")
    outer_steps = _checks.check_steps(outer_steps, "outer_steps")
    inner_steps = _checks.check_steps(inner_steps, "inner_steps")
    if log_every is not None:
        log_every = _checks.check_steps(log_every, "log_every", allow_zero=False)
    want_info = bool(hypergrad_info) or bool(warm_solve)

    label = "warm" if warm else "cold"

    def bind(fn, batch):
        if sample is None:
            return fn
        return lambda x_, y_: fn(x_, y_, batch)

    def inner_loop(f, x, y, state):
        grad_y = jax.grad(f, argnums=1)

        def body(carry, _):
            y_, s_ = carry
            updates, s_ = inner_opt.update(grad_y(x, y_), s_, y_)
            return (optax.apply_updates(y_, updates), s_), None

        (y, state), _ = lax.scan(body, (y, state), None, length=inner_steps)
        return y, state

    def outer_step(carry, t):
        x, y, x_state, y_state, v_prev = carry
        if sample is None:
            f, big_f = inner, outer
        else:
            inner_batch, outer_batch = sample(jax.random.fold_in(key, t), t)
            f, big_f = bind(inner, inner_batch), bind(outer, outer_batch)
        if not warm:
            y, y_state = y0, inner_opt.init(y0)
        y, y_state = inner_loop(f, x, y, y_state)
        if want_info:
            extra = {"init": v_prev} if warm_solve else {}
            h, info = hypergrad(f, big_f, x, y, return_info=True, **extra)
            v_prev = info["solution"] if warm_solve else v_prev
        else:
            h = hypergrad(f, big_f, x, y)
        loss = big_f(x, y)
        record = {
            "x": x,
            "outer_loss": loss,
            "inner_loss": f(x, y),
            "hypergrad_norm": _tree_norm(h),
        }
        if hypergrad_info:
            record["hypergrad_info"] = _strip_solution(info)
        if trace_y:
            record["y"] = y
        if log_every is not None:
            lax.cond(
                (t % log_every == 0) | (t == outer_steps - 1),
                lambda: jax.debug.print(
                    label + "-start step {t}/{n}  outer loss {l:.6g}", t=t + 1, n=outer_steps,
                    l=loss,
                ),
                lambda: None,
            )
        updates, x_state = outer_opt.update(h, x_state, x)
        return (optax.apply_updates(x, updates), y, x_state, y_state, v_prev), record

    v0 = jax.tree_util.tree_map(jnp.zeros_like, y0)
    init = (x0, y0, outer_opt.init(x0), inner_opt.init(y0), v0)
    (x, y, _, _, _), trace = lax.scan(outer_step, init, jnp.arange(outer_steps))
    return x, y, trace


_DOC_ARGS = r"""
    Args:
      inner: ``inner(x, y) -> scalar`` (inner objective f).
      outer: ``outer(x, y) -> scalar`` (outer objective F).
      x0: initial outer parameters (array or pytree).
      y0: initial inner parameters (array or pytree).
      hypergrad: ``hypergrad(inner, outer, x, y) -> pytree like x``, e.g.
        ``functools.partial(bilevel_lib.hypergrad.neumann, steps=10, lr=0.1)``.
      outer_opt: optax ``GradientTransformation`` for x (e.g. ``optax.sgd`` or ``optax.adam``).
      inner_opt: optax ``GradientTransformation`` for y.
      outer_steps: number of outer steps T (static int).
      inner_steps: inner optimiser steps before each hypergradient (static int).
      trace_y: also record the inner parameters at every outer step (memory T * dim(y)).
      log_every: print progress every that many outer steps (``jax.debug.print``; also
        works under ``jit``). ``None`` (default) prints nothing.
      hypergrad_info: call ``hypergrad(..., return_info=True)`` and record its ``info``
        (residual, steps, status, ...; the solve's vector excluded) per outer step in
        ``trace["hypergrad_info"]``.
      key: PRNG key, required with ``sample``.
      sample: ``sample(key_t, t) -> (inner_batch, outer_batch)`` with
        ``key_t = jax.random.fold_in(key, t)``: objectives then take data,
        ``inner(x, y, inner_batch)`` and ``outer(x, y, outer_batch)``, and step t's batches are
        used by all its inner steps, the hypergradient and the recorded losses (minibatches,
        random augmentations). ``None`` (default): ``inner(x, y)``, ``outer(x, y)``.
      warm_solve: pass the previous outer step's linear-solve solution as ``init`` to the
        next hypergradient call (inexact hypergradient descent; ``hypergrad`` must accept
        ``init`` and ``return_info``, e.g. ``hypergrad.cg`` or ``hypergrad.damped``).

    Returns:
      ``(x, y, trace)``: final outer parameters (after T updates), the last inner parameters,
      and a dict of arrays stacked over outer steps t = 0..T-1 describing the state at which
      step t's hypergradient was taken: ``"x"`` (x_t), ``"outer_loss"`` F(x_t, y_t),
      ``"inner_loss"`` f(x_t, y_t), ``"hypergrad_norm"``, ``"y"`` if ``trace_y``, and
      ``"hypergrad_info"`` if ``hypergrad_info``.
"""


def cold_start(inner, outer, x0, y0, *, hypergrad, outer_opt, inner_opt, outer_steps,
               inner_steps, trace_y=False, log_every=None, hypergrad_info=False, key=None,
               sample=None, warm_solve=False):
    return _run(inner, outer, x0, y0, hypergrad=hypergrad, outer_opt=outer_opt,
                inner_opt=inner_opt, outer_steps=outer_steps, inner_steps=inner_steps,
                warm=False, trace_y=trace_y, log_every=log_every,
                hypergrad_info=hypergrad_info, key=key, sample=sample, warm_solve=warm_solve)


cold_start.__doc__ = (
    r"""Cold-start BLO (Algorithm 1): reset y to y0 before every outer step.

    .. math:: y_{t} = \Phi_{T}(y_0, x_t),\qquad x_{t+1} = x_t - \beta\,\widehat{\nabla} F(x_t)
    """ + _DOC_ARGS + r"""
    Example:
      >>> import functools, jax.numpy as jnp, optax
      >>> from bilevel_lib import hypergrad
      >>> inner = lambda x, y: 0.5 * jnp.sum((y - x) ** 2)
      >>> outer = lambda x, y: 0.5 * jnp.sum((y - 3.0) ** 2)
      >>> x, y, trace = cold_start(inner, outer, jnp.zeros(1), jnp.zeros(1),
      ...     hypergrad=hypergrad.exact, outer_opt=optax.sgd(0.5), inner_opt=optax.sgd(0.5),
      ...     outer_steps=50, inner_steps=50)
      >>> round(float(x[0]), 4), trace["x"].shape
      (3.0, (50, 1))
    """
)


def warm_start(inner, outer, x0, y0, *, hypergrad, outer_opt, inner_opt, outer_steps,
               inner_steps, trace_y=False, log_every=None, hypergrad_info=False, key=None,
               sample=None, warm_solve=False):
    return _run(inner, outer, x0, y0, hypergrad=hypergrad, outer_opt=outer_opt,
                inner_opt=inner_opt, outer_steps=outer_steps, inner_steps=inner_steps,
                warm=True, trace_y=trace_y, log_every=log_every,
                hypergrad_info=hypergrad_info, key=key, sample=sample, warm_solve=warm_solve)


warm_start.__doc__ = (
    r"""Warm-start BLO (Algorithm 2): carry y (and its optimiser state) across outer steps.

    .. math:: y_{t} = \Phi_{T}(y_{t-1}, x_t),\qquad x_{t+1} = x_t - \beta\,\widehat{\nabla} F(x_t)
    """ + _DOC_ARGS + r"""
    Example:
      >>> import functools, jax.numpy as jnp, optax
      >>> from bilevel_lib import hypergrad
      >>> inner = lambda x, y: 0.5 * jnp.sum((y - x) ** 2)
      >>> outer = lambda x, y: 0.5 * jnp.sum((y - 3.0) ** 2)
      >>> hg = functools.partial(hypergrad.unroll, steps=1, lr=0.5)
      >>> x, y, trace = warm_start(inner, outer, jnp.zeros(1), jnp.zeros(1),
      ...     hypergrad=hg, outer_opt=optax.sgd(0.5), inner_opt=optax.sgd(0.5),
      ...     outer_steps=200, inner_steps=1)
      >>> round(float(y[0]), 4)
      3.0
    """
)


def inner_gd(inner, x, y0, *, lr, steps, max_steps=None):
    r"""``steps`` steps of inner gradient descent from ``y0``: the paper's :math:`\Phi_K(y_0, x)`.

    .. math:: y_{k+1} = y_k - \alpha \nabla_y f(x, y_k),\qquad k = 0, \dots, K-1

    Differentiable in ``x``, ``y0`` and ``lr`` (it is the loop :func:`bilevel_lib.hypergrad.unroll`
    differentiates), so ``jax.jacobian(lambda x: inner_gd(inner, x, y0, ...))`` is the
    unrolled response Jacobian. Use an optax optimiser inside :func:`cold_start` for anything
    but plain gradient descent.

    Args:
      inner: ``inner(x, y) -> scalar``.
      x: outer parameters (held fixed).
      y0: starting inner parameters (array or pytree).
      lr: step size > 0 (may be traced).
      steps: K (static int >= 0; or traced, with a static ``max_steps``, so a sweep over K is one
        ``vmap``).
      max_steps: static upper bound enabling a traced ``steps``.

    Returns:
      The inner parameters after K steps, shaped like ``y0``.

    Example:
      >>> import jax.numpy as jnp
      >>> inner = lambda x, y: 0.5 * jnp.sum((y - x) ** 2)
      >>> inner_gd(inner, jnp.array([2.0]), jnp.array([0.0]), lr=0.5, steps=3).tolist()
      [1.75]
    """
    _checks.check_float_tree(y0, "y0")
    _checks.check_objective(inner, "inner", x, y0)
    _checks.check_positive(lr, "lr")
    length, active = _steps_and_mask(steps, max_steps)
    return _descend(inner, x, y0, lr, length, active)
