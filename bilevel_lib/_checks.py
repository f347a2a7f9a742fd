"""Argument checks shared by every public function, and the deprecation helpers.

Bad input must fail loudly with the argument's name, never propagate as a silent NaN. Checks on
values (``lr > 0``) only run when the value is concrete; under ``jit``/``vmap`` a traced value
cannot be inspected, and the caller is responsible for it (documented in each docstring).

The module is private (``bilevel_lib._checks``) but its names are public, so every module of
the library may call them.
"""

from __future__ import annotations

import functools
import numbers
import warnings

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "is_concrete",
    "check_callable",
    "check_int",
    "check_steps",
    "check_positive",
    "check_objective",
    "check_float_tree",
    "steps_and_mask",
    "renamed",
    "deprecated_alias",
]


def is_concrete(value) -> bool:
    """True when no leaf of ``value`` is a tracer (the value can be inspected on the host)."""
    return not any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree_util.tree_leaves(value))


def renamed(value, old_value, new: str, old: str, where: str, *, stacklevel: int = 3):
    """Accept a renamed keyword: ``old_value`` (if given) with a ``DeprecationWarning``.

    Returns the value to use; passing both names is a ``TypeError``.
    """
    if old_value is None:
        return value
    warnings.warn(f"`{where}({old}=...)` is deprecated; use `{new}=` instead.",
                  DeprecationWarning, stacklevel=stacklevel)
    if value is not None:
        raise TypeError(f"`{where}` got both `{new}` and its deprecated name `{old}`.")
    return old_value


def deprecated_alias(fn, old: str, new: str):
    """``fn`` under its old name ``old``: same behavior, plus a ``DeprecationWarning``."""

    @functools.wraps(fn)
    def alias(*args, **kwargs):
        warnings.warn(f"`{old}` is deprecated; use `{new}` (same arguments).",
                      DeprecationWarning, stacklevel=2)
        return fn(*args, **kwargs)

    alias.__doc__ = f"Deprecated alias of :func:`{new}`."
    alias.__name__ = alias.__qualname__ = old.rsplit(".", 1)[-1]
    return alias


def check_callable(fn, name: str) -> None:
    if not callable(fn):
        raise TypeError(f"`{name}` must be a callable `{name}(x, y) -> scalar`; got {type(fn)!r}.")


def check_int(value, name: str, *, lowest: int = 0, why: str = "") -> int:
    """A Python (or NumPy) integer ``>= lowest``; ``bool`` and floats are refused.

    The one integer check of the library: counts, sizes, step numbers.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        kind = type(value).__name__
        raise TypeError(f"`{name}` must be a Python int{why}; got {kind} {value!r}.")
    if value < lowest:
        raise ValueError(f"`{name}` must be >= {lowest}; got {value}.")
    return int(value)


def check_steps(steps, name: str = "steps", *, allow_zero: bool = True) -> int:
    """Step counts are static: a Python (or NumPy) integer, never a traced value."""
    return check_int(steps, name, lowest=0 if allow_zero else 1,
                     why=" (step counts are static under jit)")


def check_positive(value, name: str):
    """``value > 0`` elementwise when concrete; traced values pass through unchecked."""
    if value is None:
        raise TypeError(f"`{name}` is required and must be a positive number; got None.")
    if is_concrete(value):
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


def steps_and_mask(steps, max_steps):
    """Static loop length, and the traced number of active iterations (or None).

    ``steps`` is a static int, or (with a static ``max_steps``) an integer that may be traced:
    iterations ``j >= steps`` of a loop of length ``max_steps`` are then masked.
    """
    if max_steps is None:
        return check_steps(steps), None
    length = check_steps(max_steps, "max_steps")
    if isinstance(steps, bool) or not jnp.issubdtype(jnp.result_type(steps), jnp.integer):
        # A float K would silently act as ceil(K) through the mask ``j < steps``.
        raise TypeError(f"`steps` must be an integer (traced or not); got {steps!r}.")
    if is_concrete(steps):
        # NumPy, not jnp: under jit a jnp op on a constant is staged, and int() of it fails.
        concrete = int(np.max(np.asarray(steps)))
        if np.min(np.asarray(steps)) < 0:
            raise ValueError(f"`steps` must be >= 0; got {steps!r}.")
        if concrete > length:
            raise ValueError(f"`steps` ({concrete}) must not exceed `max_steps` ({length}).")
    return length, jnp.asarray(steps)
