r"""Cold-start and warm-start bilevel optimization loops (the paper's Algorithms 1 and 2).

Both loops alternate ``inner_steps`` steps of an inner optax optimizer on ``inner(x, y)`` with
one outer optax step along ``hypergrad(inner, outer, x, y)``:

* **cold start** re-initializes ``y <- y0`` (and the inner optimizer state) before every outer
  step, so the inner solution is a function of ``x`` alone: with gradient descent on a convex
  quadratic it is the solution closest to ``y0`` (Lemma C.1), and the exact hypergradient then
  drives ``x`` to the outer solution closest to ``x0`` (Theorem 3.1);
* **warm start** carries ``y`` (and the inner optimizer state) over from the previous outer
  step, so ``y`` can remember every earlier ``x``; ``inner_steps=1`` is the "partial"
  warm start of alternating gradient steps, a large ``inner_steps`` the "full" one.

The whole run is one ``lax.scan`` over outer steps (with an inner ``lax.scan``), so it runs
under ``jax.jit`` and ``jax.vmap`` (e.g. over seeds, or over ``lr``/``eps`` closed into the
hypergradient with ``functools.partial``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax
from jax.typing import ArrayLike

from . import _checks, loops

__all__ = [
    "cold_start",
    "warm_start",
    "inner_gd",
    "minimize",
    "replay",
    "cold_start_unrolled",
    "cold_start_sweep",
    "sweep_values",
]


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
    if hasattr(info, "_replace"):
        return info._replace(solution=None)
    return {k: v for k, v in info.items() if k != "solution"}


def _check_monitor(monitor, monitor_every, outer_steps):
    if monitor is None:
        if monitor_every is not None:
            raise TypeError("`monitor_every` was given without `monitor`.")
        return None
    _checks.check_callable(monitor, "monitor")
    every = _checks.check_steps(monitor_every, "monitor_every", allow_zero=False)
    if outer_steps % every:
        raise ValueError(
            f"`outer_steps` ({outer_steps}) must be a multiple of `monitor_every` ({every}).")
    return every


def _scan_monitored(step, init, outer_steps, monitor, every, state_xy):
    """``lax.scan(step, init, arange(T))``, plus ``monitor(x, y)`` after every ``every`` steps.

    A scan over T / every chunks of a scan over ``every`` steps, so the monitor (an accuracy
    on a large evaluation set, say) runs T / every times, not T times, and is not a
    ``lax.cond`` that ``vmap`` would turn into computing both branches.
    """
    ts = jnp.arange(outer_steps)
    if monitor is None:
        carry, trace = lax.scan(step, init, ts)
        return carry, trace
    chunks = outer_steps // every

    def chunk(carry, ts_chunk):
        carry, records = lax.scan(step, carry, ts_chunk)
        return carry, (records, monitor(*state_xy(carry)))

    carry, (trace, monitored) = lax.scan(chunk, init, ts.reshape(chunks, every))
    trace = jax.tree_util.tree_map(lambda a: a.reshape((outer_steps,) + a.shape[2:]), trace)
    trace["monitor"] = monitored
    return carry, trace


def _run(inner, outer, x0, y0, *, hypergrad, outer_opt, inner_opt, outer_steps, inner_steps,
         warm, trace_y, log_every, hypergrad_info=False, key=None, sample=None,
         warm_solve=False, monitor=None, monitor_every=None, throw=None):
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
    every = _check_monitor(monitor, monitor_every, outer_steps)

    label = "warm" if warm else "cold"
    # Passed only when given, so a custom hypergradient without a `throw` keyword still works.
    throw_kw = {} if throw is None else {"throw": bool(throw)}

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
            h, info = hypergrad(f, big_f, x, y, return_info=True, **extra, **throw_kw)
            v_prev = info["solution"] if warm_solve else v_prev
        else:
            h = hypergrad(f, big_f, x, y, **throw_kw)
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
    (x, y, _, _, _), trace = _scan_monitored(outer_step, init, outer_steps, monitor, every,
                                             lambda c: (c[0], c[1]))
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
      inner_steps: inner optimizer steps before each hypergradient (static int).
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
      monitor: optional ``monitor(x, y) -> pytree`` (an accuracy on held-out data, say),
        evaluated after every ``monitor_every`` outer steps on the outer parameters after
        that many updates and the inner parameters of the last step; stacked in
        ``trace["monitor"]`` (leading axis T / monitor_every).
      monitor_every: a divisor of ``outer_steps``; required with ``monitor``.
      throw: passed to every ``hypergrad`` call when given: ``False`` lets a run continue
        through a failed solve (its status is in ``trace["hypergrad_info"]``), ``True``
        raises, also under ``jit``. ``None`` (default) leaves the estimator's default
        (``True`` for :mod:`bilevel_lib.hypergrad`) and works with hypergradients that have
        no ``throw`` keyword.

    Returns:
      ``(x, y, trace)``: final outer parameters (after T updates), the last inner parameters,
      and a dict of arrays stacked over outer steps t = 0..T-1 describing the state at which
      step t's hypergradient was taken: ``"x"`` (x_t), ``"outer_loss"`` F(x_t, y_t),
      ``"inner_loss"`` f(x_t, y_t), ``"hypergrad_norm"``, ``"y"`` if ``trace_y``, and
      ``"hypergrad_info"`` (a :class:`bilevel_lib.linalg.SolveInfo` of arrays stacked over
      t, ``solution`` dropped) if ``hypergrad_info``.
"""


def cold_start(inner: Callable, outer: Callable, x0: Any, y0: Any, *, hypergrad: Callable,
               outer_opt, inner_opt, outer_steps: int, inner_steps: int, trace_y: bool = False,
               log_every: int | None = None, hypergrad_info: bool = False, key=None,
               sample: Callable | None = None, warm_solve: bool = False,
               monitor: Callable | None = None, monitor_every: int | None = None,
               throw: bool | None = None):
    return _run(inner, outer, x0, y0, hypergrad=hypergrad, outer_opt=outer_opt,
                inner_opt=inner_opt, outer_steps=outer_steps, inner_steps=inner_steps,
                warm=False, trace_y=trace_y, log_every=log_every,
                hypergrad_info=hypergrad_info, key=key, sample=sample, warm_solve=warm_solve,
                monitor=monitor, monitor_every=monitor_every, throw=throw)


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


def warm_start(inner: Callable, outer: Callable, x0: Any, y0: Any, *, hypergrad: Callable,
               outer_opt, inner_opt, outer_steps: int, inner_steps: int, trace_y: bool = False,
               log_every: int | None = None, hypergrad_info: bool = False, key=None,
               sample: Callable | None = None, warm_solve: bool = False,
               monitor: Callable | None = None, monitor_every: int | None = None,
               throw: bool | None = None):
    return _run(inner, outer, x0, y0, hypergrad=hypergrad, outer_opt=outer_opt,
                inner_opt=inner_opt, outer_steps=outer_steps, inner_steps=inner_steps,
                warm=True, trace_y=trace_y, log_every=log_every,
                hypergrad_info=hypergrad_info, key=key, sample=sample, warm_solve=warm_solve,
                monitor=monitor, monitor_every=monitor_every, throw=throw)


warm_start.__doc__ = (
    r"""Warm-start BLO (Algorithm 2): carry y (and its optimizer state) across outer steps.

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


def inner_gd(inner: Callable, x: Any, y0: Any, *, lr: ArrayLike, steps,
             max_steps: int | None = None):
    r"""``steps`` steps of inner gradient descent from ``y0``: the paper's :math:`\Phi_K(y_0, x)`.

    .. math:: y_{k+1} = y_k - \alpha \nabla_y f(x, y_k),\qquad k = 0, \dots, K-1

    Differentiable in ``x``, ``y0`` and ``lr`` (it is the loop :func:`bilevel_lib.hypergrad.unroll`
    differentiates), so ``jax.jacobian(lambda x: inner_gd(inner, x, y0, ...))`` is the
    unrolled response Jacobian. Use an optax optimizer inside :func:`cold_start` for anything
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
    length, active = _checks.steps_and_mask(steps, max_steps)
    grad_y = jax.grad(inner, argnums=1)
    return loops.descend(lambda y, _: grad_y(x, y), y0, lr=lr, length=length, active=active)


def minimize(loss_fn: Callable, params0: Any, *, steps: int, optimizer, batches: Any = None):
    r"""Minimize ``loss_fn(params)`` from ``params0`` with an optax optimizer (one ``lax.scan``).

    The plain training loop every task needs (re-training a model on learned data, fitting a
    reference); the loops of :func:`cold_start` and :func:`warm_start` take the same steps.
    Not jitted here: jit the caller (a fresh closure jitted inside would recompile each call).

    Args:
      loss_fn: ``params -> scalar``.
      params0: initial parameters (pytree of floats).
      steps: number of optimizer steps (static int).
      optimizer: optax ``GradientTransformation``, e.g. ``optax.sgd(0.1)``.
      batches: optional pytree whose leaves have a leading axis of length ``steps`` (e.g.
        minibatch indices); step ``t`` then minimizes ``loss_fn(params, batch_t)``, its
        ``t``-th slice: stochastic training with the minibatches fixed in advance.

    Returns:
      ``(params, losses)``: the parameters after ``steps`` updates and the loss before each
      (with ``batches``, the loss on that step's batch).

    Example:
      >>> import jax.numpy as jnp, optax
      >>> p, losses = minimize(lambda w: jnp.sum((w - 3.0) ** 2), jnp.zeros(2), steps=100,
      ...                   optimizer=optax.sgd(0.25))
      >>> p.round(4).tolist(), losses.shape
      ([3.0, 3.0], (100,))
    """
    _checks.check_callable(loss_fn, "loss_fn")
    _checks.check_float_tree(params0, "params0")
    steps = _checks.check_steps(steps, "steps")
    _check_optimizer(optimizer, "optimizer")
    if batches is not None:
        lengths = {np.shape(leaf)[:1] for leaf in jax.tree_util.tree_leaves(batches)}
        if lengths != {(steps,)}:
            raise ValueError(f"every leaf of `batches` must have a leading axis of length "
                             f"`steps` ({steps}); got leading shapes {sorted(lengths)}.")
    value_and_grad = jax.value_and_grad(loss_fn)

    def run(p0):
        def body(carry, batch):
            p, s = carry
            value, g = value_and_grad(p) if batches is None else value_and_grad(p, batch)
            updates, s = optimizer.update(g, s, p)
            return (optax.apply_updates(p, updates), s), value

        (p, _), losses = lax.scan(body, (p0, optimizer.init(p0)), batches, length=steps)
        return p, losses

    return run(params0)


def replay(inner: Callable, y0: Any, xs: Any, *, lr: ArrayLike, every: int | None = None):
    r"""Re-run inner gradient descent along a recorded outer trajectory ``xs``.

    .. math:: y_{t+1} = y_t - \alpha\, \nabla_y f(x_t, y_t),\qquad t = 0, \dots, T-1

    Warm-start BLO with one inner SGD step per outer step (``inner_steps=1``) is exactly this
    recursion with ``xs = trace["x"]``: the final inner parameters are a function of the whole
    outer trajectory, not of its last point. (One ``lax.scan``; jit the caller.)

    Args:
      inner: ``inner(x, y) -> scalar``.
      y0: initial inner parameters (pytree).
      xs: outer parameters stacked over time (pytree with a leading time axis ``T``).
      lr: step size alpha > 0.
      every: if given, also return the snapshots ``y_every, y_2every, ..., y_T``
        (``T`` must be a multiple of ``every``), e.g. for the frames of an animation.

    Returns:
      ``y_T``, or ``(y_T, snapshots)`` with a leading axis of length ``T / every``.

    Example:
      >>> import jax.numpy as jnp
      >>> inner = lambda x, y: 0.5 * jnp.sum((y - x) ** 2)   # y_{t+1} = y_t / 2 + x_t / 2
      >>> replay(inner, jnp.zeros(1), jnp.array([[4.0], [0.0]]), lr=0.5).tolist()
      [1.0]
      >>> replay(inner, jnp.zeros(1), jnp.array([[4.0], [0.0]]), lr=0.5, every=1)[1].tolist()
      [[2.0], [1.0]]
    """
    _checks.check_callable(inner, "inner")
    _checks.check_float_tree(y0, "y0")
    _checks.check_float_tree(xs, "xs")
    _checks.check_positive(lr, "lr")
    length = jax.tree_util.tree_leaves(xs)[0].shape[0]
    if every is not None:
        every = _checks.check_steps(every, "every", allow_zero=False)
        if length % every:
            raise ValueError(f"`every` ({every}) must divide the trajectory length ({length}).")
    grad_y = jax.grad(inner, argnums=1)

    def steps(y_init, xs_):
        def body(y, x):
            return jax.tree_util.tree_map(lambda a, g: a - lr * g, y, grad_y(x, y)), None

        return lax.scan(body, y_init, xs_)[0]

    if every is None:
        return steps(y0, xs)

    def chunked(y_init, xs_):
        blocks = jax.tree_util.tree_map(
            lambda a: a.reshape((length // every, every) + a.shape[1:]), xs_
        )

        def block(y, xb):
            y = steps(y, xb)
            return y, y

        return lax.scan(block, y_init, blocks)

    return chunked(y0, xs)


def cold_start_unrolled(inner, outer, x0, y0, *, inner_opt, inner_steps, outer_opt,
                        outer_steps, monitor=None, monitor_every=None):
    r"""Cold-start BLO with the exact gradient of the re-training (one ``lax.scan``).

    At every outer step the model is re-trained from the same ``y0`` on the current learned
    points, ``y_t = \Phi_K(y_0, x_t)`` (``inner_steps = K`` steps of the optax ``inner_opt``),
    and ``x`` moves along the gradient of the cold-start objective, obtained by reverse-mode
    differentiation through all K steps:

    .. math:: x_{t+1} = x_t - \beta\, \frac{d}{dx} F\big(x, \Phi_K(y_0, x)\big)\Big|_{x_t}.

    Unlike :func:`cold_start` with ``bilevel_lib.tasks.distill.full_unroll``, the K inner
    steps run once per outer step (their forward pass serves both the recorded losses and the
    gradient), and
    ``inner_opt`` may be any optax optimizer (to differentiate through Adam, give it
    ``eps_root > 0``, e.g. ``optax.adam(1e-2, eps_root=1e-8)``, so that its square root is
    differentiable at zero). Memory O(K dim y).

    Args:
      inner, outer: ``(x, y) -> scalar``.
      x0, y0: initial learned data and the fixed model initialization (pytrees).
      inner_opt, outer_opt: optax ``GradientTransformation`` s.
      inner_steps: K (static int); outer_steps: T (static int).
      monitor, monitor_every: as in :func:`cold_start`; the monitor sees ``x`` after that
        many updates and the model re-trained on it.

    Returns:
      ``(x_T, y, trace)``: the final learned data, the model re-trained on them, and a dict
      stacked over t = 0..T-1 with ``"x"`` (x_t), ``"outer_loss"`` F(x_t, y_t) and
      ``"inner_loss"`` f(x_t, y_t) of the re-trained model y_t (and ``"monitor"``).

    Example:
      >>> import jax.numpy as jnp, optax
      >>> inner = lambda x, y: 0.5 * jnp.sum((y - x) ** 2)
      >>> outer = lambda x, y: 0.5 * jnp.sum((y - 3.0) ** 2)
      >>> x, y, tr = cold_start_unrolled(inner, outer, jnp.zeros(1), jnp.zeros(1),
      ...     inner_opt=optax.sgd(0.5), inner_steps=1, outer_opt=optax.sgd(1.0),
      ...     outer_steps=100)                        # y = x / 2, so x -> 6
      >>> round(float(x[0]), 4), round(float(y[0]), 4), tr["inner_loss"].shape
      (6.0, 3.0, (100,))
    """
    _checks.check_callable(inner, "inner")
    _checks.check_callable(outer, "outer")
    _checks.check_float_tree(x0, "x0")
    _checks.check_float_tree(y0, "y0")
    inner_steps = _checks.check_steps(inner_steps, "inner_steps")
    outer_steps = _checks.check_steps(outer_steps, "outer_steps")
    _check_optimizer(inner_opt, "inner_opt")
    _check_optimizer(outer_opt, "outer_opt")
    every = _check_monitor(monitor, monitor_every, outer_steps)
    grad_y = jax.grad(inner, argnums=1)

    def retrained(x):
        def body(carry, _):
            y, s = carry
            updates, s = inner_opt.update(grad_y(x, y), s, y)
            return (optax.apply_updates(y, updates), s), None

        return lax.scan(body, (y0, inner_opt.init(y0)), None, length=inner_steps)[0][0]

    def objective(x):
        y = retrained(x)
        return outer(x, y), inner(x, y)

    value_and_grad = jax.value_and_grad(objective, has_aux=True)

    def run(x_init):
        def step(carry, _):
            x, s = carry
            (big_f, small_f), g = value_and_grad(x)
            updates, s = outer_opt.update(g, s, x)
            record = {"x": x, "outer_loss": big_f, "inner_loss": small_f}
            return (optax.apply_updates(x, updates), s), record

        (x, _), trace = _scan_monitored(step, (x_init, outer_opt.init(x_init)), outer_steps,
                                        monitor, every, lambda c: (c[0], retrained(c[0])))
        return x, retrained(x), trace

    return run(x0)


def sweep_values(param, values, options=None):
    """Check a sweep over one estimator option; return ``(values array, estimator options)``.

    A step count (``param="steps"``) gets ``max_steps=max(values)`` in the options and int32
    values, so every K shares one compiled loop; float options come back as a float array.

    Example:
      >>> values, options = sweep_values("steps", [1, 5], {"lr": 0.1})
      >>> values.tolist(), options
      ([1, 5], {'lr': 0.1, 'max_steps': 5})
    """
    if not isinstance(param, str):
        raise TypeError(f"`param` must be the name of an estimator keyword; got {param!r}.")
    options = dict(options or {})
    if param in options:
        raise ValueError(f"`{param}` is swept; do not also pass it in `options`.")
    values = np.asarray(values)
    if values.ndim != 1 or values.shape[0] < 1:
        raise ValueError(f"`values` must be a non-empty 1-D sequence; got shape {values.shape}.")
    if param == "steps":
        if not np.issubdtype(values.dtype, np.integer) or np.any(values < 0):
            raise ValueError(f"`values` of `steps` must be ints >= 0; got {values.tolist()}.")
        options["max_steps"] = int(values.max())
        return jnp.asarray(values, dtype=jnp.int32), options
    if not np.issubdtype(values.dtype, np.number) or not np.all(np.isfinite(values)):
        raise ValueError(f"`values` must be finite numbers; got {values.tolist()}.")
    return jnp.asarray(values, dtype=jnp.result_type(float)), options


def cold_start_sweep(inner: Callable, outer: Callable, x0: Any, y0: Any, *, estimator: Callable,
                     param: str, values, options: dict | None = None, outer_opt, inner_opt,
                     outer_steps: int, inner_steps: int, trace_y: bool = False,
                     throw: bool | None = None):
    r"""Cold-start BLO for every value of one estimator option, as one ``vmap``.

    For each ``v`` in ``values`` it runs :func:`cold_start` with
    ``hypergrad = partial(estimator, **{param: v}, **options)``. A sweep over a step count
    (``param="steps"``) passes ``max_steps=max(values)``, so every K shares one compiled loop
    with a traced ``steps`` (terms past K are masked); float options such as ``eps`` or
    ``lr`` are traced directly.

    Args:
      inner, outer, x0, y0: as in :func:`cold_start`.
      estimator: a :mod:`bilevel_lib.hypergrad` estimator (``neumann``, ``unroll``, ``cg``,
        ``damped``).
      param: the swept keyword (e.g. ``"steps"``, ``"eps"``).
      values: 1-D sequence of its values (concrete; ints for ``"steps"``).
      options: other keyword arguments of the estimator (e.g. ``{"lr": 0.1}``).
      outer_opt, inner_opt, outer_steps, inner_steps, trace_y, throw: as in ``cold_start``
        (``throw=False`` for a sweep that is expected to leave the estimator's radius).

    Returns:
      ``(x, y, trace)`` of :func:`cold_start`, each with a leading axis of
      length ``len(values)``.

    Example:
      >>> import jax.numpy as jnp, optax
      >>> from bilevel_lib import hypergrad
      >>> inner = lambda x, y: 0.5 * jnp.sum(jnp.array([1.0, 0.5]) * (y - x) ** 2)
      >>> outer = lambda x, y: 0.5 * jnp.sum(y) ** 2
      >>> xs, _, _ = cold_start_sweep(inner, outer, jnp.ones(2), jnp.zeros(2),
      ...     estimator=hypergrad.neumann, param="steps", values=[1, 50], options={"lr": 1.0},
      ...     outer_opt=optax.sgd(0.2), inner_opt=optax.sgd(1.0), outer_steps=200,
      ...     inner_steps=60)
      >>> [[f"{v:.3f}" for v in row] for row in abs(xs)]   # K = 1 moves x along (1, 0.5),
      [['0.333', '0.333'], ['0.000', '0.000']]
      >>> xs[0, 0] < 0                                     # K = 50 along (1, 1)
      Array(True, dtype=bool)
    """
    _checks.check_callable(estimator, "estimator")
    values, options = sweep_values(param, values, options)

    def one(value):
        hg = functools.partial(estimator, **{param: value}, **options)
        return cold_start(inner, outer, x0, y0, hypergrad=hg, outer_opt=outer_opt,
                          inner_opt=inner_opt, outer_steps=outer_steps,
                          inner_steps=inner_steps, trace_y=trace_y, throw=throw)

    return jax.vmap(one)(values)
