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

from .. import _checks, blo, hypergrad
from ..models import metrics

__all__ = [
    "soft_labels",
    "cross_entropy",
    "learned_data",
    "objectives",
    "loss",
    "accuracy",
    "retrain",
    "full_unroll",
    "keep_in_box",
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
        if _checks.is_concrete(targets) and targets.size and (
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
    """Deprecated: ``bilevel_lib.models.metrics.accuracy(apply(params, points), labels)``.

    Example:
      >>> import jax.numpy as jnp
      >>> apply = lambda p, u: u @ p                       # a linear 2-class model
      >>> round(float(accuracy(apply, jnp.eye(2), jnp.array([[1.0, 0.0], [0.0, 1.0], [2.0, 1.0]]),
      ...                      jnp.array([0, 1, 1]))), 4)
      0.6667
    """
    _checks.check_callable(apply, "apply")
    return metrics.accuracy(apply(params, points), labels)


def objectives(apply, data_points, data_labels, *, labels=None):
    r"""The distillation objectives ``(inner, outer)``, each ``(x, y) -> scalar``.

    ``inner(x, y)`` is the training loss of ``apply(y, .)`` on the learned data ``x`` (hard
    ``labels`` or learned soft labels, see :func:`learned_data`); ``outer(x, y)`` its loss on
    the original data ``(data_points, data_labels)``. The outer loss does not depend on ``x``
    directly: x reaches it only through y, i.e. through the hypergradient.

    Args:
      apply: ``apply(params, points (n, d)) -> logits (n, C)``, e.g.
        :func:`bilevel_lib.models.mlp.apply`.
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



def retrain(apply, params0, points, targets, *, steps, optimizer):
    r"""Train ``apply`` from scratch (``params0``) on ``(points, targets)``.

    A :func:`bilevel_lib.blo.minimize` of the cross-entropy.

    This is "re-training" in the paper (Fig. 7, Table 3): a fresh model fitted only to the given
    learned points, so it knows nothing the points do not carry. ``targets`` are int labels or
    soft labels (rows summing to 1).

    Example:
      >>> import jax, jax.numpy as jnp, optax
      >>> from bilevel_lib.models import mlp
      >>> p0 = mlp.init(jax.random.PRNGKey(0), (2, 16, 2))
      >>> pts, lab = jnp.array([[-1.0, 0.0], [1.0, 0.0]]), jnp.array([0, 1])
      >>> p, losses = retrain(mlp.apply, p0, pts, lab, steps=300, optimizer=optax.adam(0.05))
      >>> bool(losses[-1] < 1e-2), float(metrics.accuracy(mlp.apply(p, pts), lab))
      (True, 1.0)
    """
    _checks.check_callable(apply, "apply")
    points, targets = jnp.asarray(points), jnp.asarray(targets)
    if targets.shape[:1] != points.shape[:1]:
        raise ValueError(
            f"`targets` must have one row per point ({points.shape[0]}); got {targets.shape}."
        )
    return blo.minimize(lambda p: cross_entropy(apply(p, points), targets), params0,
                        steps=steps, optimizer=optimizer)


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



def keep_in_box(low, high):
    r"""An optax transformation that keeps the learned points inside the box ``[low, high]^d``.

    Chain it after the outer optimizer, ``optax.chain(optax.adam(0.01), keep_in_box(-3, 3))``:
    it shortens each update so that ``clip(points + update, low, high)`` is where the points
    land (a projected optimizer step). For a dict ``x`` only ``x["points"]`` is constrained
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
        # A projected step: where the projection puts the points, minus where they are.
        return optax.projections.projection_box(point + update, low, high) - point

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
