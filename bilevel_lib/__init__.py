"""bilevel_lib: hypergradients and bilevel optimisation loops in JAX, with their implicit bias.

The companion library of the book *Implicit Bias in Overparameterized Bilevel Optimization*.
Submodules have one job each:

* :mod:`bilevel_lib.hypergrad` -- hypergradient estimators with one signature
  ``estimator(inner, outer, x, y, **options)``: ``exact``, ``neumann``, ``damped``, ``cg``,
  ``minres``, ``unroll`` (all but ``unroll`` built on ``implicit``);
* :mod:`bilevel_lib.linalg` -- the core linear algebra: one HVP, one zero threshold, and the
  linear solvers (CG, damped CG, LSQR-based MINRES, dense pinv) with residual/status info;
* :mod:`bilevel_lib.blo` -- ``cold_start`` and ``warm_start`` loops (one ``lax.scan``);
* :mod:`bilevel_lib.quadratic` -- closed forms for quadratic problems (closest solutions,
  Kaczmarz projections, Theorem 3.1's outer limit);
* :mod:`bilevel_lib.spectral` -- the approximations as spectral filters;
* :mod:`bilevel_lib.hvp` -- Hessian-vector products in three autodiff modes;
* :mod:`bilevel_lib.ridge` -- the ridge-regression example with its closed form;
* :mod:`bilevel_lib.datasets`, :mod:`bilevel_lib.mlp`, :mod:`bilevel_lib.distill` -- 2-D data
  sets, a ReLU MLP and dataset-distillation objectives (warm-start memory);
* :mod:`bilevel_lib.fourier` -- the Fourier-feature regression task (anti-distillation);
* :mod:`bilevel_lib.plotting` -- the book's figure style;
* :mod:`bilevel_lib.runtime` -- device report and the paper-scale switch.
"""

from . import (
    blo,
    datasets,
    distill,
    fourier,
    hvp,
    hypergrad,
    linalg,
    mlp,
    plotting,
    quadratic,
    ridge,
    runtime,
    spectral,
)
from .blo import cold_start, inner_gd, warm_start
from .runtime import device_report, paper_scale

__version__ = "0.1.0"

__all__ = [
    "blo",
    "datasets",
    "distill",
    "fourier",
    "hvp",
    "hypergrad",
    "linalg",
    "mlp",
    "plotting",
    "quadratic",
    "ridge",
    "runtime",
    "spectral",
    "cold_start",
    "warm_start",
    "inner_gd",
    "device_report",
    "paper_scale",
    "__version__",
]
