r"""Dataset distillation as a bilevel problem (the paper's Sec. 2 and 4.1).

The outer parameters ``x`` are ``m`` learned data points; the inner parameters ``y`` are the
weights of a model ``apply(y, u) -> logits``. With cross-entropy ``CE``,

.. math::

    f(x, y) = \frac{1}{m}\sum_{i=1}^m \mathrm{CE}\big(\mathrm{apply}(y, \tilde u_i),\,
              \tilde t_i\big),
    \qquad
    F(x, y) = \frac{1}{N}\sum_{j=1}^N \mathrm{CE}\big(\mathrm{apply}(y, u_j),\, t_j\big),

where ``(u_j, t_j)`` is the original data set (used only in F) and the learned points
``\tilde u_i`` carry either fixed hard labels ``\tilde t_i`` or learned soft labels
``softmax(\ell_i)`` from learned logits ``\ell_i``. So ``x`` is

* an array ``(m, d)`` of learned points, with the hard labels given to :func:`objectives`; or
* a dict ``{"points": (m, d), "label_logits": (m, C)}`` (soft labels are learned too).

Both are pytrees that :mod:`bilevel_lib.blo` and :mod:`bilevel_lib.hypergrad` accept as ``x``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

from .. import _checks, hypergrad

__all__ = [
    "soft_labels",
    "cross_entropy",
    "learned_data",
    "objectives",
    "loss",
    "accuracy",
    "train",
    "retrain",
    "full_unroll",
    "cold_start",
    "keep_in_box",
    "replay",
    "trajectory_data",
]


def soft_labels(label_logits):
    r"""Soft labels ``softmax(l)`` along the last axis (each row sums to 1).

    Example:
      >>> import jax.numpy as jnp
      >>> soft_labels(jnp.array([[0.0, 0.0], [jnp.log(3.0), 0.0]])).round(4).tolist()
      [[0.5, 0.5], [0.75, 0.25]]
    """
    label_logits = jnp.asarray(label_logits)
    if label_logits.ndim < 1 or not jnp.issubdtype(label_logits.dtype, jnp.floating):
        raise TypeError(
            f"`label_logits` must be a float array (..., C); got {label_logits.dtype} "
            f"of shape {label_logits.shape}."
        )
    return jax.nn.softmax(label_logits, axis=-1)


def cross_entropy(logits, targets):
    r"""Mean cross-entropy of ``logits (N, C)`` against hard or soft ``targets``.

    .. math:: \mathrm{CE} = -\frac{1}{N}\sum_n \sum_c p_{nc} \log \mathrm{softmax}(z_n)_c

    Args:
      logits: ``(N, C)`` float.
      targets: int labels ``(N,)`` in ``[0, C)``, or class probabilities ``(N, C)``.

    Example:
      >>> import jax.numpy as jnp
      >>> z = jnp.array([[0.0, 0.0], [2.0, 0.0]])
      >>> hard = cross_entropy(z, jnp.array([0, 0]))
      >>> soft = cross_entropy(z, jnp.array([[1.0, 0.0], [1.0, 0.0]]))
      >>> round(float(hard), 5) == round(float(soft), 5) == round(float(
      ...     (jnp.log(2.0) + jnp.log1p(jnp.exp(-2.0))) / 2), 5)
      True
    """
    logits, targets = jnp.asarray(logits), jnp.asarray(targets)
    if logits.ndim != 2:
        raise ValueError(f"`logits` must have shape (N, C); got {logits.shape}.")
    logp = jax.nn.log_softmax(logits, axis=-1)
    if jnp.issubdtype(targets.dtype, jnp.integer):
        if targets.shape != logits.shape[:1]:
            raise ValueError(
                f"integer `targets` must have shape ({logits.shape[0]},); got {targets.shape}."
            )
        if _checks._is_concrete(targets) and targets.size and (
            np.min(np.asarray(targets)) < 0 or np.max(np.asarray(targets)) >= logits.shape[1]
        ):
            raise ValueError(f"`targets` must be class indices in [0, {logits.shape[1]}).")
        return -jnp.mean(jnp.take_along_axis(logp, targets[:, None], axis=1))
    if targets.shape != logits.shape:
        raise ValueError(
            f"soft `targets` must have the shape of `logits` {logits.shape}; got {targets.shape}."
        )
    return -jnp.mean(jnp.sum(targets * logp, axis=-1))


def learned_data(x, labels=None):
    r"""``(points, targets)`` of the learned data ``x`` (see the module docstring).

    Args:
      x: ``(m, d)`` learned points (then ``labels`` is required), or a dict with ``"points"``
        and optionally ``"label_logits"`` (soft labels ``softmax`` of them, used if present).
      labels: int ``(m,)`` hard labels of the learned points.

    Example:
      >>> import jax.numpy as jnp
      >>> pts, t = learned_data({"points": jnp.zeros((2, 2)), "label_logits": jnp.zeros((2, 4))})
      >>> t.tolist()
      [[0.25, 0.25, 0.25, 0.25], [0.25, 0.25, 0.25, 0.25]]
    """
    if isinstance(x, dict):
        if "points" not in x:
            raise ValueError(f"dict `x` needs a 'points' entry; got keys {sorted(x)}.")
        points = jnp.asarray(x["points"])
        if "label_logits" in x:
            targets = soft_labels(x["label_logits"])
            if targets.shape[:1] != points.shape[:1]:
                raise ValueError(
                    f"`x['label_logits']` needs one row per point ({points.shape[0]}); got "
                    f"shape {targets.shape}."
                )
            return points, targets
    else:
        points = jnp.asarray(x)
    if labels is None:
        raise ValueError(
            "`labels` (hard labels of the learned points) are required when `x` has no "
            "'label_logits'."
        )
    labels = jnp.asarray(labels)
    if labels.shape != points.shape[:1]:
        raise ValueError(
            f"`labels` must have one entry per learned point ({points.shape[0]}); "
            f"got shape {labels.shape}."
        )
    return points, labels


def loss(apply, params, points, targets):
    """Mean cross-entropy of the model ``apply(params, .)`` on ``(points, targets)``."""
    _checks.check_callable(apply, "apply")
    return cross_entropy(apply(params, points), targets)


def accuracy(apply, params, points, labels):
    """Fraction of ``points`` whose arg-max logit is the int label.

    Example:
      >>> import jax.numpy as jnp
      >>> apply = lambda p, u: u @ p                       # a linear 2-class model
      >>> round(float(accuracy(apply, jnp.eye(2), jnp.array([[1.0, 0.0], [0.0, 1.0], [2.0, 1.0]]),
      ...                      jnp.array([0, 1, 1]))), 4)
      0.6667
    """
    _checks.check_callable(apply, "apply")
    labels = jnp.asarray(labels)
    if not jnp.issubdtype(labels.dtype, jnp.integer):
        raise TypeError(f"`labels` must be int class indices; got {labels.dtype}.")
    pred = jnp.argmax(apply(params, points), axis=-1)
    if pred.shape != labels.shape:
        raise ValueError(f"`labels` must have shape {pred.shape}; got {labels.shape}.")
    return jnp.mean(pred == labels)


def objectives(apply, data_points, data_labels, *, labels=None):
    r"""The distillation objectives ``(inner, outer)``, each ``(x, y) -> scalar``.

    ``inner(x, y)`` is the training loss of ``apply(y, .)`` on the learned data ``x`` (hard
    ``labels`` or learned soft labels, see :func:`learned_data`); ``outer(x, y)`` its loss on
    the original data ``(data_points, data_labels)``. The outer loss does not depend on ``x``
    directly: x reaches it only through y, i.e. through the hypergradient.

    Args:
      apply: ``apply(params, points (n, d)) -> logits (n, C)``, e.g. :func:`bilevel_lib.models.mlp.apply`.
      data_points: ``(N, d)`` original inputs.
      data_labels: ``(N,)`` int original labels.
      labels: ``(m,)`` int hard labels of the learned points (``None`` for soft labels).

    Returns:
      ``(inner, outer)``.

    Example:
      >>> import jax.numpy as jnp
      >>> apply = lambda p, u: u @ p
      >>> inner, outer = objectives(apply, jnp.array([[1.0, 0.0]]), jnp.array([0]),
      ...                           labels=jnp.array([1]))
      >>> x, y = jnp.array([[0.0, 1.0]]), jnp.eye(2)
      >>> round(float(inner(x, y)), 5) == round(float(jnp.log1p(jnp.exp(-1.0))), 5)
      True
    """
    _checks.check_callable(apply, "apply")
    data_points = jnp.asarray(data_points)
    data_labels = jnp.asarray(data_labels)
    if data_points.ndim != 2:
        raise ValueError(f"`data_points` must have shape (N, d); got {data_points.shape}.")
    if not jnp.issubdtype(data_labels.dtype, jnp.integer):
        raise TypeError(f"`data_labels` must be int class indices; got {data_labels.dtype}.")
    if data_labels.shape != data_points.shape[:1]:
        raise ValueError(
            f"`data_labels` must have shape ({data_points.shape[0]},); got {data_labels.shape}."
        )
    if labels is not None:
        labels = jnp.asarray(labels)
        if not jnp.issubdtype(labels.dtype, jnp.integer):
            raise TypeError(f"`labels` must be int class indices; got {labels.dtype}.")

    def inner(x, y):
        points, targets = learned_data(x, labels)
        return cross_entropy(apply(y, points), targets)

    def outer(x, y):
        del x  # the original data enter only through the model
        return cross_entropy(apply(y, data_points), data_labels)

    return inner, outer


def train(loss_fn, params0, *, steps, optimizer):
    r"""Minimise ``loss_fn(params)`` from ``params0`` with an optax optimiser (one jitted scan).

    Args:
      loss_fn: ``params -> scalar``.
      params0: initial parameters (pytree of floats).
      steps: number of optimiser steps (static int).
      optimizer: optax ``GradientTransformation``, e.g. ``optax.sgd(0.1)``.

    Returns:
      ``(params, losses)``: the parameters after ``steps`` updates and the loss before each.

    Example:
      >>> import jax.numpy as jnp, optax
      >>> p, losses = train(lambda w: jnp.sum((w - 3.0) ** 2), jnp.zeros(2), steps=100,
      ...                   optimizer=optax.sgd(0.25))
      >>> p.round(4).tolist(), losses.shape
      ([3.0, 3.0], (100,))
    """
    _checks.check_callable(loss_fn, "loss_fn")
    _checks.check_float_tree(params0, "params0")
    steps = _checks.check_steps(steps, "steps")
    if not (hasattr(optimizer, "init") and hasattr(optimizer, "update")):
        raise TypeError(
            f"`optimizer` must be an optax.GradientTransformation; got {type(optimizer).__name__}."
        )
    value_and_grad = jax.value_and_grad(loss_fn)

    def run(p0):
        def body(carry, _):
            p, s = carry
            value, g = value_and_grad(p)
            updates, s = optimizer.update(g, s, p)
            return (optax.apply_updates(p, updates), s), value

        (p, _), losses = lax.scan(body, (p0, optimizer.init(p0)), None, length=steps)
        return p, losses

    return jax.jit(run)(params0)


def retrain(apply, params0, points, targets, *, steps, optimizer):
    r"""Train ``apply`` from scratch (``params0``) on ``(points, targets)``; see :func:`train`.

    This is "re-training" in the paper (Fig. 7, Table 3): a fresh model fitted only to the given
    learned points, so it knows nothing the points do not carry. ``targets`` are int labels or
    soft labels (rows summing to 1).

    Example:
      >>> import jax, jax.numpy as jnp, optax
      >>> from bilevel_lib.models import mlp
      >>> p0 = mlp.init(jax.random.PRNGKey(0), (2, 16, 2))
      >>> pts, lab = jnp.array([[-1.0, 0.0], [1.0, 0.0]]), jnp.array([0, 1])
      >>> p, losses = retrain(mlp.apply, p0, pts, lab, steps=300, optimizer=optax.adam(0.05))
      >>> bool(losses[-1] < 1e-2), float(accuracy(mlp.apply, p, pts, lab))
      (True, 1.0)
    """
    _checks.check_callable(apply, "apply")
    points, targets = jnp.asarray(points), jnp.asarray(targets)
    if targets.shape[:1] != points.shape[:1]:
        raise ValueError(
            f"`targets` must have one row per point ({points.shape[0]}); got {targets.shape}."
        )
    return train(lambda p: cross_entropy(apply(p, points), targets), params0, steps=steps,
                 optimizer=optimizer)


def full_unroll(y0, *, steps, lr):
    r"""Cold-start hypergradient: differentiate the whole inner training from ``y0``.

    Returns an estimator ``(inner, outer, x, y) -> dF/dx`` of
    ``d/dx F(x, Phi_K(y0, x))`` with ``Phi_K`` = K gradient-descent steps of size ``lr`` from
    ``y0`` (reverse-mode through all K steps; memory O(K dim y)). It ignores the ``y`` it is
    given, so with ``bilevel_lib.blo.cold_start`` (``inner_opt=optax.sgd(lr)``,
    ``inner_steps=K``) it is the exact gradient of the cold-start objective
    ``x -> F(x, Phi_K(y0, x))``, the "full unroll" of Maclaurin et al. (2015).

    Example:
      >>> import jax.numpy as jnp
      >>> inner = lambda x, y: 0.5 * jnp.sum((y - x) ** 2)
      >>> outer = lambda x, y: jnp.sum(y)
      >>> hg = full_unroll(jnp.zeros(1), steps=2, lr=0.5)   # y_2 = 0.75 x
      >>> hg(inner, outer, jnp.ones(1), jnp.full(1, 123.0)).tolist()
      [0.75]
    """
    _checks.check_float_tree(y0, "y0")
    steps = _checks.check_steps(steps, "steps")
    _checks.check_positive(lr, "lr")

    def estimator(inner, outer, x, y):
        del y  # differentiate the re-training from y0, not a step from the current y
        return hypergrad.unroll(inner, outer, x, y0, steps=steps, lr=lr)

    return estimator


def cold_start(inner, outer, x0, y0, *, inner_opt, inner_steps, outer_opt, outer_steps):
    r"""Cold-start BLO with the exact gradient of the re-training (one jitted scan).

    At every outer step the model is re-trained from the same ``y0`` on the current learned
    points, ``y_t = \Phi_K(y_0, x_t)`` (``inner_steps = K`` steps of the optax ``inner_opt``),
    and ``x`` moves along the gradient of the cold-start objective, obtained by reverse-mode
    differentiation through all K steps:

    .. math:: x_{t+1} = x_t - \beta\, \frac{d}{dx} F\big(x, \Phi_K(y_0, x)\big)\Big|_{x_t}.

    Unlike ``bilevel_lib.blo.cold_start`` with :func:`full_unroll`, the K inner steps run once
    per outer step (their forward pass serves both the recorded losses and the gradient), and
    ``inner_opt`` may be any optax optimizer (to differentiate through Adam, give it
    ``eps_root > 0``, e.g. ``optax.adam(1e-2, eps_root=1e-8)``, so that its square root is
    differentiable at zero). Memory O(K dim y).

    Args:
      inner, outer: ``(x, y) -> scalar``.
      x0, y0: initial learned data and the fixed model initialization (pytrees).
      inner_opt, outer_opt: optax ``GradientTransformation`` s.
      inner_steps: K (static int); outer_steps: T (static int).

    Returns:
      ``(x_T, y, trace)``: the final learned data, the model re-trained on them, and a dict
      stacked over t = 0..T-1 with ``"x"`` (x_t), ``"outer_loss"`` F(x_t, y_t) and
      ``"inner_loss"`` f(x_t, y_t) of the re-trained model y_t.

    Example:
      >>> import jax.numpy as jnp, optax
      >>> inner = lambda x, y: 0.5 * jnp.sum((y - x) ** 2)
      >>> outer = lambda x, y: 0.5 * jnp.sum((y - 3.0) ** 2)
      >>> x, y, tr = cold_start(inner, outer, jnp.zeros(1), jnp.zeros(1),
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
    for opt, name in ((inner_opt, "inner_opt"), (outer_opt, "outer_opt")):
        if not (hasattr(opt, "init") and hasattr(opt, "update")):
            raise TypeError(
                f"`{name}` must be an optax.GradientTransformation; got {type(opt).__name__}."
            )
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

        (x, _), trace = lax.scan(step, (x_init, outer_opt.init(x_init)), None,
                                 length=outer_steps)
        return x, retrained(x), trace

    return jax.jit(run)(x0)


def keep_in_box(low, high):
    r"""An optax transformation that keeps the learned points inside the box ``[low, high]^d``.

    Chain it after the outer optimiser, ``optax.chain(optax.adam(0.01), keep_in_box(-3, 3))``:
    it shortens each update so that ``clip(points + update, low, high)`` is where the points
    land (a projected optimiser step). For a dict ``x`` only ``x["points"]`` is constrained
    (learned label logits are free). Learned inputs, like image pixels in dataset distillation,
    then stay in the domain of the original data.

    Example:
      >>> import jax.numpy as jnp, optax
      >>> box = keep_in_box(-1.0, 1.0)
      >>> x = jnp.array([[0.5, -0.9]])
      >>> updates, _ = box.update(jnp.array([[1.0, -1.0]]), box.init(x), x)
      >>> optax.apply_updates(x, updates).tolist()
      [[1.0, -1.0]]
    """
    low, high = float(low), float(high)
    if not (np.isfinite(low) and np.isfinite(high) and low < high):
        raise ValueError(f"`low` < `high` must be finite; got low={low}, high={high}.")

    def fit(update, point):
        return jnp.clip(point + update, low, high) - point

    def init(params):
        del params
        return optax.EmptyState()

    def update(updates, state, params=None):
        if params is None:
            raise ValueError("`keep_in_box` needs the current parameters (`params`).")
        if isinstance(params, dict):
            updates = dict(updates)
            updates["points"] = fit(updates["points"], params["points"])
        else:
            updates = fit(updates, params)
        return updates, state

    return optax.GradientTransformation(init, update)


def replay(inner, y0, xs, *, lr, every=None):
    r"""Re-run inner gradient descent along a recorded outer trajectory ``xs``.

    .. math:: y_{t+1} = y_t - \alpha\, \nabla_y f(x_t, y_t),\qquad t = 0, \dots, T-1

    Warm-start BLO with one inner SGD step per outer step (``inner_steps=1``) is exactly this
    recursion with ``xs = trace["x"]``: the final inner parameters are a function of the whole
    outer trajectory, not of its last point. (One jitted ``lax.scan``.)

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
        return jax.jit(steps)(y0, xs)

    def chunked(y_init, xs_):
        blocks = jax.tree_util.tree_map(
            lambda a: a.reshape((length // every, every) + a.shape[1:]), xs_
        )

        def block(y, xb):
            y = steps(y, xb)
            return y, y

        return lax.scan(block, y_init, blocks)

    return jax.jit(chunked)(y0, xs)


def trajectory_data(trace_x, labels=None, *, every=1):
    r"""All learned points visited along a run, as one data set ``(points, targets)``.

    Args:
      trace_x: ``trace["x"]`` from ``bilevel_lib.blo.warm_start``: an array ``(T, m, d)``,
        or a dict with ``"points"`` ``(T, m, d)`` and optionally ``"label_logits"``
        ``(T, m, C)``.
      labels: ``(m,)`` int hard labels (needed without ``"label_logits"``).
      every: keep every ``every``-th outer step.

    Returns:
      ``(points (T' m, d), targets)`` with ``T' = ceil(T / every)``: int labels tiled over time,
      or the soft labels each point had at that time.

    Example:
      >>> import jax.numpy as jnp
      >>> pts, t = trajectory_data(jnp.zeros((10, 2, 2)), jnp.array([0, 1]), every=5)
      >>> pts.shape, t.tolist()
      ((4, 2), [0, 1, 0, 1])
    """
    every = _checks.check_steps(every, "every", allow_zero=False)
    sub = jax.tree_util.tree_map(lambda a: jnp.asarray(a)[::every], trace_x)
    points = sub["points"] if isinstance(sub, dict) else sub
    if points.ndim != 3:
        raise ValueError(f"trajectory points must have shape (T, m, d); got {points.shape}.")
    t, m, d = points.shape
    if isinstance(sub, dict) and "label_logits" in sub:
        targets = soft_labels(sub["label_logits"]).reshape(t * m, -1)
    else:
        if labels is None:
            raise ValueError("`labels` are required for a trajectory without 'label_logits'.")
        labels = jnp.asarray(labels)
        if labels.shape != (m,):
            raise ValueError(f"`labels` must have shape ({m},); got {labels.shape}.")
        targets = jnp.tile(labels, t)
    return points.reshape(t * m, d), targets
