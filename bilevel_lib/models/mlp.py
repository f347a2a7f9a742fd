r"""A ReLU multilayer perceptron with its parameters as a dict pytree.

.. math:: h_0 = u,\quad h_{l+1} = \mathrm{relu}(h_l W_l + b_l)\ (l < L-1),\quad
          \mathrm{logits} = h_{L-1} W_{L-1} + b_{L-1}

``params = {"w0": W_0, "b0": b_0, "w1": ..., ...}`` with ``W_l`` of shape
``(sizes[l], sizes[l+1])``. A dict pytree goes straight through ``jax.grad``, the optax
optimizers and :mod:`bilevel_lib.blo` as the inner parameters ``y``.
"""

from __future__ import annotations

import numbers

import jax
import jax.numpy as jnp

from .. import _checks

__all__ = ["init", "apply", "num_layers", "num_params"]


def _check_sizes(sizes):
    sizes = tuple(sizes)
    if len(sizes) < 2:
        raise ValueError(f"`sizes` needs an input and an output size; got {sizes}.")
    try:
        return tuple(_checks.check_int(s, "sizes", lowest=1) for s in sizes)
    except (TypeError, ValueError) as err:
        raise ValueError(f"`sizes` must be positive ints; got {sizes}.") from err


def init(key, sizes, *, dtype=jnp.float32, out_scale=1.0):
    r"""He-normal weights (``N(0, 2 / fan_in)``) and zero biases for layer sizes ``sizes``.

    ``out_scale`` multiplies the last layer's weights: ``out_scale < 1`` starts the network
    near the uniform prediction (small initial logits), so that no region of the input space is
    classified confidently before training.

    Args:
      key: a ``jax.random`` key.
      sizes: ``(d_in, hidden_1, ..., d_out)``, e.g. ``(2, 200, 200, 200, 200, 2)`` for four
        hidden ReLU layers of 200 units on 2-D inputs with 2 output logits.
      dtype: parameter dtype.
      out_scale: factor (>= 0) on the He-normal weights of the output layer.

    Returns:
      ``{"w0", "b0", ..., "w{L-1}", "b{L-1}"}`` with ``L = len(sizes) - 1`` linear layers.

    Example:
      >>> import jax
      >>> params = init(jax.random.PRNGKey(0), (2, 8, 3))
      >>> {k: v.shape for k, v in sorted(params.items())}
      {'b0': (8,), 'b1': (3,), 'w0': (2, 8), 'w1': (8, 3)}
    """
    sizes = _check_sizes(sizes)
    if not isinstance(out_scale, numbers.Real) or not out_scale >= 0:
        raise ValueError(f"`out_scale` must be a number >= 0; got {out_scale!r}.")
    keys = jax.random.split(key, len(sizes) - 1)
    params = {}
    for i, (k, fan_in, fan_out) in enumerate(zip(keys, sizes[:-1], sizes[1:], strict=True)):
        scale = jnp.sqrt(2.0 / fan_in).astype(dtype)
        if i == len(sizes) - 2:
            scale = scale * out_scale
        params[f"w{i}"] = scale * jax.random.normal(k, (fan_in, fan_out), dtype)
        params[f"b{i}"] = jnp.zeros((fan_out,), dtype)
    return params


def num_layers(params) -> int:
    """Number of linear layers L in ``params`` (checks the ``w{i}``/``b{i}`` keys)."""
    if not isinstance(params, dict) or not params:
        raise TypeError(f"`params` must be a dict from `mlp.init`; got {type(params).__name__}.")
    n = len(params) // 2
    expected = {f"{p}{i}" for i in range(n) for p in "wb"}
    if set(params) != expected:
        raise ValueError(
            f"`params` must have keys w0, b0, ..., w{n - 1}, b{n - 1}; got {sorted(params)}."
        )
    return n


def num_params(params) -> int:
    """Total number of scalars in ``params``.

    Example:
      >>> import jax
      >>> num_params(init(jax.random.PRNGKey(0), (2, 200, 200, 200, 200, 2)))
      121602
    """
    return sum(int(jnp.size(v)) for v in jax.tree_util.tree_leaves(params))


def apply(params, inputs):
    r"""Logits of the MLP at ``inputs`` of shape ``(..., d_in)``: ``(..., d_out)``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> params = {"w0": jnp.eye(2), "b0": jnp.array([0.0, -1.0]),
      ...           "w1": jnp.ones((2, 1)), "b1": jnp.zeros(1)}
      >>> apply(params, jnp.array([[2.0, 3.0], [-1.0, 0.5]])).tolist()  # relu(2)+relu(2), 0+0
      [[4.0], [0.0]]
    """
    n = num_layers(params)
    h = jnp.asarray(inputs)
    d_in = params["w0"].shape[0]
    if h.ndim < 1 or h.shape[-1] != d_in:
        raise ValueError(f"`inputs` must have shape (..., {d_in}); got {h.shape}.")
    for i in range(n):
        h = h @ params[f"w{i}"] + params[f"b{i}"]
        if i < n - 1:
            h = jax.nn.relu(h)
    return h
