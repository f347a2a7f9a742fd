"""Argument checks shared by every public function.

Bad input must fail loudly with the argument's name, never propagate as a silent NaN. Checks on
values (``lr > 0``) only run when the value is concrete; under ``jit``/``vmap`` a traced value
cannot be inspected, and the caller is responsible for it (documented in each docstring).
"""

from __future__ import annotations

import numbers

import jax
import jax.numpy as jnp
import numpy as np


def _is_concrete(value) -> bool:
    return not any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree_util.tree_leaves(value))


def check_callable(fn, name: str) -> None:
    if not callable(fn):
        raise TypeError(f"`{name}` must be a callable `{name}(x, y) -> scalar`; got {type(fn)!r}.")


def check_steps(steps, name: str = "steps", *, allow_zero: bool = True) -> int:
    """Step counts are static: a Python (or NumPy) integer, never a traced value."""
    if isinstance(steps, bool) or not isinstance(steps, numbers.Integral):
        raise TypeError(
            f"`{name}` must be a Python int (step counts are static under jit); "
            f"got {type(steps).__name__} {steps!r}."
        )
    lowest = 0 if allow_zero else 1
    if steps < lowest:
        raise ValueError(f"`{name}` must be >= {lowest}; got {steps}.")
    return int(steps)


def check_positive(value, name: str):
    """``value > 0`` elementwise when concrete; traced values pass through unchecked."""
    if value is None:
        raise TypeError(f"`{name}` is required and must be a positive number; got None.")
    if _is_concrete(value):
        arr = np.asarray(value)
        if not np.issubdtype(arr.dtype, np.number):
            raise TypeError(f"`{name}` must be a positive number; got {value!r}.")
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"`{name}` must be finite; got {value!r}.")
        if not np.all(arr > 0):
            raise ValueError(f"`{name}` must be > 0; got {value!r}.")
    return value


def _describe(tree) -> str:
    shapes = jax.tree_util.tree_map(lambda a: tuple(jnp.shape(a)), tree)
    return str(shapes)


def check_objective(fn, name: str, x, y, args=()) -> None:
    """Abstractly evaluate ``fn(x, y, *args)`` (no FLOPs) and insist on a real scalar output."""
    check_callable(fn, name)
    if not isinstance(args, tuple):
        raise TypeError(f"`args` must be a tuple of extra arguments; got {type(args).__name__}.")
    try:
        out = jax.eval_shape(fn, x, y, *args)
    except Exception as err:  # the objective's own message is kept, with shapes added
        raise ValueError(
            f"`{name}(x, y)` failed for x of shape {_describe(x)} and y of shape {_describe(y)}; "
            f"check that `x` and `y` have the shapes `{name}` expects. Original error: "
            f"{type(err).__name__}: {err}"
        ) from err
    if not hasattr(out, "shape") or out.shape != ():
        shape = getattr(out, "shape", type(out).__name__)
        raise ValueError(f"`{name}(x, y)` must return a scalar; got output of shape {shape}.")
    if not jnp.issubdtype(out.dtype, jnp.floating):
        raise TypeError(f"`{name}(x, y)` must return a real floating scalar; got {out.dtype}.")


def check_float_tree(tree, name: str) -> None:
    leaves = jax.tree_util.tree_leaves(tree)
    if not leaves:
        raise ValueError(f"`{name}` has no array leaves.")
    for leaf in leaves:
        dtype = jnp.result_type(leaf)
        if not jnp.issubdtype(dtype, jnp.floating):
            raise TypeError(
                f"`{name}` must hold floating-point arrays (differentiable parameters); "
                f"got a leaf of dtype {dtype}."
            )
