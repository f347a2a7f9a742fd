"""Helpers the benchmark scripts share: timing, error measures and argument parsing.

The scripts import this module by name (``from common import ...``), so run them as scripts
from the repository root (``python benchmarks/NAME.py``): Python puts ``benchmarks/`` on the
path then.
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np


def make_parser(doc, *, rounds, reps):
    """An ``ArgumentParser`` described by ``doc``'s first line, with ``--rounds``/``--reps``.

    Every script times with :func:`time_alternating`; these two options size it.
    """
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=rounds,
                        help="alternating timed rounds (the median over them is reported)")
    parser.add_argument("--reps", type=int, default=reps, help="calls per round and function")
    return parser


def time_alternating(fns, args, *, rounds, reps):
    """Per-call seconds for each fn: median over ``rounds`` of the mean over ``reps`` calls.

    The functions take turns round by round, so a burst of load on a shared machine hits both.
    Returns ``{name: (median, best round)}``.
    """
    per_call = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            start = time.perf_counter()
            for _ in range(reps):
                jax.block_until_ready(fn(*args))
            per_call[name].append((time.perf_counter() - start) / reps)
    return {name: (statistics.median(t), min(t)) for name, t in per_call.items()}


def rel(a, b):
    """Relative error ``|a - b| / |b|`` (2-norm, computed in float64)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def to_dtype(tree, dtype):
    """Cast every leaf of ``tree`` to ``dtype``."""
    return jax.tree_util.tree_map(lambda a: jnp.asarray(a, dtype), tree)


def tree_norm(tree):
    """2-norm of all the leaves of ``tree`` together."""
    return float(jnp.sqrt(sum(jnp.sum(leaf**2) for leaf in jax.tree_util.tree_leaves(tree))))


def max_abs_diff(a, b):
    """Largest absolute difference between two arrays."""
    return float(jnp.max(jnp.abs(jnp.asarray(a) - jnp.asarray(b))))


def timed(fn):
    """``(seconds, out)`` for one call ``out = fn()``, waiting for the result."""
    start = time.perf_counter()
    out = jax.block_until_ready(fn())
    return time.perf_counter() - start, out
