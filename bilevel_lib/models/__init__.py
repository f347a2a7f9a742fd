"""Models the tasks train: pure functions of a parameter pytree.

* :mod:`bilevel_lib.models.mlp` -- a fully connected ReLU network;
* :mod:`bilevel_lib.models.linear` -- a linear softmax classifier;
* :mod:`bilevel_lib.models.metrics` -- :func:`~bilevel_lib.models.metrics.accuracy` of any
  model's logits.

Models import the core only (never the tasks).
"""

from . import linear, metrics, mlp

__all__ = ["linear", "metrics", "mlp"]
