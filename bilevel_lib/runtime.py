"""Run-time helpers every chapter calls first: the device report and the paper-scale switch."""

from __future__ import annotations

import os

import jax

__all__ = ["device_report", "paper_scale", "PAPER_SCALE_ENV"]

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
