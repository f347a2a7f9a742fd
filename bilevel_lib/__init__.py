"""bilevel_lib: hypergradients and bilevel optimization loops in JAX, with their implicit bias.

The companion library of the book *Implicit Bias in Overparameterized Bilevel Optimization*.
The core has one job a module:

* :mod:`bilevel_lib.hypergrad` -- hypergradient estimators with one signature
  ``estimator(inner, outer, x, y, **options)``: ``exact``, ``neumann``, ``damped``, ``cg``,
  ``lsqr``, ``unroll``, and ``implicit`` for a solver of your own;
* :mod:`bilevel_lib.linalg` -- the one Hessian-vector product, the one zero threshold, and the
  linear solvers (``solve(matvec, b, *, init) -> (v, SolveInfo)``);
* :mod:`bilevel_lib.blo` -- ``cold_start`` and ``warm_start`` loops (one ``lax.scan``);
* :mod:`bilevel_lib.quadratic` -- closed forms for quadratic problems (closest solutions,
  Kaczmarz projections, Theorem 3.1's outer limit);
* :mod:`bilevel_lib.spectral` -- the approximations as spectral filters;
* :mod:`bilevel_lib.loops` -- the one descent loop ``z <- z - step_j d(z, j)``;
* :mod:`bilevel_lib.runtime` -- device report, the paper-scale switch and ``sharded_vmap``.

Around it, and never imported by it:

* :mod:`bilevel_lib.tasks` -- the chapters' tasks (ridge regression, 2-D toy data, the image
  benchmarks, dataset distillation, Fourier-feature anti-distillation, error rates);
* :mod:`bilevel_lib.models` -- models the tasks train (a ReLU MLP, a linear softmax
  classifier) and the one ``accuracy``;
* :mod:`bilevel_lib.profiling` -- Hessian-vector products in three autodiff modes, compiled
  memory and timing helpers;
* :mod:`bilevel_lib.plotting` -- the book's figure style.
"""

import importlib

# The core loads with the package; the layers around it (matplotlib, the data loaders) load on
# first use, so `import bilevel_lib.hypergrad` stays light.
from . import blo, hypergrad, linalg, loops, quadratic, runtime, spectral
from .blo import cold_start, inner_gd, warm_start
from .runtime import device_report, paper_scale

_LAZY = ("tasks", "models", "profiling", "plotting")


def __getattr__(name):
    if name in _LAZY:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))


__version__ = "0.2.0"

__all__ = [
    "blo",
    "hypergrad",
    "linalg",
    "loops",
    "quadratic",
    "spectral",
    "tasks",
    "models",
    "profiling",
    "plotting",
    "runtime",
    "cold_start",
    "warm_start",
    "inner_gd",
    "device_report",
    "paper_scale",
    "__version__",
]
