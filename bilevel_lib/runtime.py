"""How the book runs: the device report, the paper-scale switch, and sweeps over devices.

* :func:`device_report` and :func:`paper_scale` -- what every chapter calls first;
* :func:`sharded_vmap` -- ``jax.vmap`` over a seed axis sharded over every visible device.
"""

from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from . import _checks

__all__ = ["device_report", "paper_scale", "sharded_vmap", "PAPER_SCALE_ENV"]

PAPER_SCALE_ENV = "BILEVEL_PAPER_SCALE"


def device_report() -> str:
    """One line naming the JAX version, backend and devices this run uses.

    Example:
      >>> "JAX" in device_report()
      True
    """
    devices = jax.devices()
    kinds = ", ".join(sorted({d.device_kind for d in devices}))
    return (
        f"JAX {jax.__version__} on {jax.default_backend()} "
        f"({len(devices)} device{'s' if len(devices) != 1 else ''}: {kinds}); "
        f"x64={'on' if jax.config.jax_enable_x64 else 'off'}"
    )


def paper_scale() -> bool:
    """The book's one switch between default (CPU-sized) and paper-scale experiments.

    True when the environment variable ``BILEVEL_PAPER_SCALE`` is ``1``/``true``/``yes``.
    Chapters read it once (``PAPER_SCALE = bilevel_lib.paper_scale()``); paper scale is meant
    for a GPU. Default: False.

    Example:
      >>> import os; os.environ.pop("BILEVEL_PAPER_SCALE", None) and None
      >>> paper_scale()
      False
    """
    return os.environ.get(PAPER_SCALE_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


@functools.lru_cache(maxsize=64)
def _sweep(run, devices, num_shared):
    mesh = Mesh(np.array(devices), ("seeds",))
    split = NamedSharding(mesh, PartitionSpec("seeds"))
    whole = NamedSharding(mesh, PartitionSpec())
    fn = jax.jit(jax.vmap(run, in_axes=(0,) + (None,) * num_shared), out_shardings=split)
    return fn, split, whole


def sharded_vmap(run, keys, *shared, devices=None):
    r"""``jax.vmap(run)(keys, *shared)`` with the leading (seed) axis sharded over devices.

    A 1-D ``jax.sharding.Mesh`` over ``devices`` (default: ``jax.devices()``, every
    visible device) with axis ``"seeds"``; ``keys`` are placed with
    ``NamedSharding(mesh, PartitionSpec("seeds"))`` and the jitted ``vmap`` keeps every output
    sharded the same way, so each device runs its share of the seeds and nothing is gathered.
    A batch that does not divide evenly is padded with copies of its last entry, and the
    padding is cut from the outputs. The result equals the single-device ``vmap`` up to
    float rounding; but XLA rounds a batch of one seed differently from a batch of eight, and
    long warm-start runs amplify rounding (by about 1.4 a step on MNIST), so after thousands of
    steps the per-seed results depend on how many seeds share a device, and only statistics
    over seeds carry over (``benchmarks/bench_sharded.py`` measures it).

    ``shared`` arguments (a data set, say) are the same for every entry of the sweep: they
    are not batched, and every device gets a copy. The compiled sweep is kept per ``run``
    (the same function object) and device list, so a second call with new ``shared`` arrays
    of the same shapes (another data set) reuses it instead of compiling again; pass data
    this way rather than binding them into ``run``, where they become constants of the
    program.

    Args:
      run: ``run(key, *shared) -> pytree of arrays``, e.g. ``functools.partial(
        bilevel_lib.tasks.image_distill.warm_start_run, original=..., ...)``, with static
        settings bound.
      keys: a batch of PRNG keys (``(n, 2)`` uint32 or typed ``(n,)``), or any pytree of
        arrays sharing a leading sweep axis (e.g. ``(keys, learning_rates)`` for a ``run``
        of two arguments bundled as one tuple).
      *shared: further arguments of ``run``, the same for every entry (``in_axes=None``).
      devices: optional list of devices.

    Returns:
      ``run``'s outputs, each with a leading axis of ``len(keys)`` sharded over the devices.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> out = sharded_vmap(lambda k: jax.random.normal(k, (3,)), jax.random.split(
      ...     jax.random.PRNGKey(0), 4))
      >>> out.shape, bool(jnp.allclose(out, jax.vmap(lambda k: jax.random.normal(k, (3,)))(
      ...     jax.random.split(jax.random.PRNGKey(0), 4))))
      ((4, 3), True)
      >>> shift = lambda k, c: jax.random.normal(k, (3,)) + c
      >>> keys = jax.random.split(jax.random.PRNGKey(0), 2)
      >>> bool(jnp.allclose(sharded_vmap(shift, keys, 1.0), sharded_vmap(shift, keys, 0.0) + 1))
      True
    """
    _checks.check_callable(run, "run")
    devices = list(jax.devices() if devices is None else devices)
    if not devices:
        raise ValueError("`devices` is empty.")
    sizes = {jnp.shape(leaf)[0] if jnp.ndim(leaf) else 0
             for leaf in jax.tree_util.tree_leaves(keys)}
    if len(sizes) != 1 or min(sizes) < 1:
        raise ValueError(
            f"`keys` needs one leading batch axis of length >= 1 on every leaf; got leading "
            f"sizes {sorted(sizes)}."
        )
    n = sizes.pop()
    pad = -n % len(devices)
    if pad:
        keys = jax.tree_util.tree_map(
            lambda a: jnp.concatenate([a, jnp.repeat(a[-1:], pad, axis=0)]), keys)
    fn, split, whole = _sweep(run, tuple(devices), len(shared))
    keys = jax.device_put(keys, split)
    shared = jax.device_put(shared, whole)
    out = fn(keys, *shared)
    if pad:
        out = jax.tree_util.tree_map(lambda a: a[:n], out)
    return out
