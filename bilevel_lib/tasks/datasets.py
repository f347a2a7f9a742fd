"""Deprecated: the old home of the data sets, split into two modules with one job each.

* :mod:`bilevel_lib.tasks.toy_data` -- the seeded 2-D generators (``rings``, ``sinusoid``,
  ``sinusoid_boundary``);
* :mod:`bilevel_lib.tasks.image_data` -- MNIST, Fashion-MNIST and CIFAR-10 loaded from their
  canonical files (``load``, ``as_float``, ``data_dir`` and the errors).

This module re-exports both under the old names and will be removed; import the new modules.
"""

import warnings

from .image_data import (  # noqa: F401
    NAMES,
    SPLITS,
    CorruptDatasetError,
    DatasetError,
    DatasetNotFoundError,
    as_float,
    data_dir,
    load,
)
from .toy_data import rings, sinusoid, sinusoid_boundary  # noqa: F401

# stacklevel=1: attributed to this module, the warning shows under pytest and `-W default`
# but not in a notebook's cell output (Python shows DeprecationWarning only for __main__).
warnings.warn(
    "bilevel_lib.tasks.datasets is deprecated: use bilevel_lib.tasks.toy_data (rings, sinusoid) "
    "and bilevel_lib.tasks.image_data (load, as_float, data_dir).",
    DeprecationWarning, stacklevel=1)

__all__ = [
    "CorruptDatasetError",
    "DatasetError",
    "DatasetNotFoundError",
    "NAMES",
    "SPLITS",
    "as_float",
    "data_dir",
    "load",
    "rings",
    "sinusoid",
    "sinusoid_boundary",
]
