r"""A linear softmax classifier with its parameters as a dict pytree.

.. math:: \mathrm{logits} = u W + b,\qquad p(c \mid u) = \mathrm{softmax}(u W + b)_c

``params = {"W": (d, C), "b": (C,)}``. Trained with cross-entropy it is a convex problem
(strongly convex with an L2 penalty on ``W``): the classifier of the paper's Table 3 and
Fig. 9 (:mod:`bilevel_lib.tasks.image_distill`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from .. import _checks

__all__ = ["init", "apply"]


def init(dim, num_classes, *, key=None, scale=0.01, dtype=None):
    r"""Parameters ``{"W": (d, C), "b": (C,)}`` of the linear classifier.

    Zeros without ``key`` (the usual start of a convex problem: cold start from zero);
    with ``key``, ``W`` is ``scale * N(0, 1)`` and ``b`` zero.

    Args:
      dim: input size d (int >= 1).
      num_classes: number of classes C (int >= 2).
      key: optional ``jax.random`` key for a random ``W``.
      scale: standard deviation of the random ``W``.
      dtype: parameter dtype (default: JAX's default float).

    Returns:
      ``{"W", "b"}``.

    Example:
      >>> p = init(4, 3)
      >>> p["W"].shape, p["b"].shape, float(abs(p["W"]).sum())
      ((4, 3), (3,), 0.0)
    """
    dim = _checks.check_int(dim, "dim", lowest=1)
    num_classes = _checks.check_int(num_classes, "num_classes", lowest=2)
    dtype = dtype or jnp.result_type(float)
    w = jnp.zeros((dim, num_classes), dtype)
    if key is not None:
        w = scale * jax.random.normal(key, (dim, num_classes), dtype)
    return {"W": w, "b": jnp.zeros((num_classes,), dtype)}


def apply(params, inputs):
    r"""Logits ``inputs @ W + b`` of the classifier ``params = {"W", "b"}``: ``(..., C)``.

    Example:
      >>> import jax.numpy as jnp
      >>> apply({"W": jnp.eye(2), "b": jnp.array([0.0, 1.0])}, jnp.array([[2.0, 0.0]])).tolist()
      [[2.0, 1.0]]
    """
    return inputs @ params["W"] + params["b"]
