r"""How well a model's predictions match the labels: the one ``accuracy`` of the library.

Every model here maps inputs to **logits** (``mlp.apply``, ``linear.apply``, or a linear score
``X @ w``); :func:`accuracy` compares them with the labels, so a caller writes
``accuracy(model.apply(params, points), labels)`` whatever the model.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from .. import _checks

__all__ = ["accuracy"]


def accuracy(logits, labels):
    r"""Fraction of correct predictions: the arg-max logit, or the sign of a binary score.

    .. math::

        \mathrm{acc} = \frac1N \sum_{n=1}^N \big[\arg\max_c z_{nc} = t_n\big]
        \quad\text{or, binary,}\quad
        \frac1N \sum_{n=1}^N \big[\operatorname{sign}(s_n) = t_n\big],\
        \operatorname{sign}(0) = +1

    Args:
      logits: ``(N, C)`` logits with int labels ``t_n`` in ``[0, C)``; or ``(N,)`` scores
        ``s_n`` of a binary classifier (``X @ w``) with labels ``t_n`` in ``{-1, +1}``.
      labels: ``(N,)`` labels as above (int class indices; ``+-1``, int or float, for scores).

    Returns:
      A scalar in ``[0, 1]`` (jit- and vmap-able; the label checks run only when concrete).

    Raises:
      ValueError: ``labels`` does not have one entry per row of ``logits``, or (when concrete)
        binary labels other than ``+-1``.
      TypeError: float labels with ``(N, C)`` logits.

    Example:
      >>> import jax.numpy as jnp
      >>> z = jnp.array([[2.0, 0.0], [0.0, 1.0], [3.0, 1.0]])
      >>> round(float(accuracy(z, jnp.array([0, 1, 1]))), 4)
      0.6667
      >>> round(float(accuracy(jnp.array([0.5, -2.0, 0.0]), jnp.array([1.0, 1.0, 1.0]))), 4)
      0.6667
    """
    logits, labels = jnp.asarray(logits), jnp.asarray(labels)
    if logits.ndim == labels.ndim + 1:
        if not jnp.issubdtype(labels.dtype, jnp.integer):
            raise TypeError(f"`labels` must be int class indices with (N, C) logits; got "
                            f"{labels.dtype}.")
        if logits.shape[:-1] != labels.shape:
            raise ValueError(f"`labels` must have shape {logits.shape[:-1]}; got {labels.shape}.")
        return jnp.mean(jnp.argmax(logits, axis=-1) == labels)
    if logits.shape != labels.shape:
        raise ValueError(
            f"`labels` must have shape {logits.shape[:-1]} (class indices for (N, C) logits) or "
            f"{logits.shape} (+-1 for binary scores); got {labels.shape}.")
    if _checks.is_concrete(labels) and not np.all(np.isin(np.asarray(labels), (-1, 1))):
        raise ValueError("binary `labels` (of scores with the shape of `labels`) must be +-1.")
    return jnp.mean(jnp.where(logits >= 0, 1, -1) == labels)
