"""The chapters' tasks: data, objectives and closed forms of the book's experiments.

Everything here is built on the core (:mod:`bilevel_lib.hypergrad`, :mod:`bilevel_lib.blo`,
:mod:`bilevel_lib.quadratic`, :mod:`bilevel_lib.spectral`); nothing in the core imports it.

* :mod:`bilevel_lib.tasks.ridge` -- ridge regression with its closed-form hypergradient
  (chapter 1, the tutorial's example);
* :mod:`bilevel_lib.tasks.toy_data` -- seeded 2-D data sets (rings, a sinusoidal boundary);
* :mod:`bilevel_lib.tasks.image_data` -- the image benchmarks (MNIST, Fashion-MNIST, CIFAR-10)
  loaded from their canonical files, offline copies or verified downloads;
* :mod:`bilevel_lib.tasks.distill` -- dataset-distillation objectives (chapter 4);
* :mod:`bilevel_lib.tasks.image_distill` -- image distillation and a data-augmentation net with a
  linear classifier (chapter 5, the paper's Table 3);
* :mod:`bilevel_lib.tasks.fourier` -- the Fourier-feature anti-distillation task (chapter 6);
* :mod:`bilevel_lib.tasks.error_rates` -- error rates, inexact and stochastic hypergradient
  descent (chapter 7).
"""

from . import distill, error_rates, fourier, image_data, image_distill, ridge, toy_data

__all__ = ["distill", "error_rates", "fourier", "image_data", "image_distill", "ridge",
           "toy_data"]
