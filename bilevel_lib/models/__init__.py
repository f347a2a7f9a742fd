"""Models the tasks train: pure functions of a parameter pytree.

* :mod:`bilevel_lib.models.mlp` -- a fully connected ReLU network.
"""

from . import mlp

__all__ = ["mlp"]
