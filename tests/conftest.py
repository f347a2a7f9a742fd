"""Shared fixtures: float64 mode, and random bilevel problems whose derivatives are known.

The problems are built so that every quantity a hypergradient needs (``H``, ``B``, ``dF/dx``,
``dF/dy``) has a closed form written here with NumPy, independently of the library: the tests
compare the library with these closed forms, never with its own earlier output. Test modules
import the builders (``from conftest import make_linear_quadratic``); plain functions rather
than fixtures, so that hypothesis tests can call them too.
"""

from __future__ import annotations

import os
from types import SimpleNamespace

import hypothesis
import jax
import jax.numpy as jnp
import numpy as np
import pytest

# Under CI the property tests draw the same examples every run, so that CI's verdict depends on
# the code and the machine's rounding, not on which random examples were drawn this time; a
# developer's run keeps exploring new ones.
hypothesis.settings.register_profile("ci", derandomize=True, database=None)
if os.environ.get("CI"):
    hypothesis.settings.load_profile("ci")


@pytest.fixture
def x64():
    """Run the test with ``jax_enable_x64`` on (restored afterwards)."""
    with jax.enable_x64(True):
        yield


def _psd(rng, n, rank, *, lo=0.5, hi=4.0):
    """Random PSD ``(n, n)`` matrix of the given rank, nonzero eigenvalues in ``[lo, hi]``."""
    q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    lam = np.zeros(n)
    lam[:rank] = np.sort(rng.uniform(lo, hi, rank))[::-1]
    if rank >= 2:  # pin the spread so step sizes and convergence rates are predictable
        lam[0], lam[rank - 1] = hi, lo
    return (q * lam) @ q.T, lam, q


def make_linear_quadratic(seed=0, *, n_x=3, n_y=6, rank=4, dtype=np.float64, consistent=False):
    r"""A quadratic bilevel problem with every derivative in closed form.

    .. math::

        f(x, y) = \tfrac12 y^\top A y - y^\top C x + \tfrac12 |x|^2,\qquad
        F(x, y) = \tfrac12 |\Psi y - t|^2 + x^\top E y + \tfrac{c}{2} |x|^2,

    so ``H = A`` (PSD, rank ``rank``), ``B = -C``, ``F_x = E y + c x`` and
    ``F_y = Psi^T (Psi y - t) + E^T x``. ``x`` and ``y`` are random (``y`` need not be
    stationary). With ``consistent=True``, ``C``, ``E`` and ``Psi`` are built so that ``F_y``
    lies in ``range(A)`` and ``y`` is the min-norm inner solution ``A^+ C x``.
    """
    rng = np.random.default_rng(seed)
    a, lam, q = _psd(rng, n_y, rank)
    c_mat = rng.standard_normal((n_y, n_x))
    e_mat = rng.standard_normal((n_x, n_y))
    psi = rng.standard_normal((4, n_y))
    t = rng.standard_normal(4)
    x = rng.standard_normal(n_x)
    y = rng.standard_normal(n_y)
    c = 0.3
    if consistent:
        range_proj = q[:, :rank] @ q[:, :rank].T
        c_mat = range_proj @ c_mat
        e_mat = e_mat @ range_proj
        psi = psi @ range_proj
        y = np.linalg.pinv(a) @ c_mat @ x
    a_j, c_j, e_j, psi_j, t_j = (jnp.asarray(v, dtype) for v in (a, c_mat, e_mat, psi, t))

    def inner(x_, y_):
        return 0.5 * y_ @ a_j @ y_ - y_ @ (c_j @ x_) + 0.5 * jnp.sum(x_**2)

    def outer(x_, y_):
        r = psi_j @ y_ - t_j
        return 0.5 * jnp.sum(r**2) + x_ @ e_j @ y_ + 0.5 * c * jnp.sum(x_**2)

    f_x = e_mat @ y + c * x
    f_y = psi.T @ (psi @ y - t) + e_mat.T @ x
    return SimpleNamespace(
        inner=inner, outer=outer, x=jnp.asarray(x, dtype), y=jnp.asarray(y, dtype),
        x_np=x, y_np=y, H=a, B=-c_mat, F_x=f_x, F_y=f_y, E=e_mat, psi=psi, t=t, c=c,
        eigenvalues=lam, eigenvectors=q, lam_max=float(lam.max()), rank=rank,
    )


def make_least_squares(seed=0, *, m=3, n=7, p=2, dtype=np.float64):
    r"""The paper's linear bilevel problem (App. B.1).

    ``f = 1/2|Phi y - x|^2`` and ``F = 1/2|Psi y - t|^2``.

    ``Phi`` (m, n) has full row rank with singular values in ``[1, 2]`` (so ``H = Phi^T Phi``
    has rank ``m`` and ``n - m`` zero eigenvalues); ``J* = Phi^+``.
    """
    rng = np.random.default_rng(seed)
    u, _ = np.linalg.qr(rng.standard_normal((m, m)))
    v, _ = np.linalg.qr(rng.standard_normal((n, n)))
    s = np.linspace(2.0, 1.0, m)
    phi = (u * s) @ v[:, :m].T
    psi = rng.standard_normal((p, n))
    t = rng.standard_normal(p)
    x = rng.standard_normal(m)
    phi_j, psi_j, t_j = (jnp.asarray(a, dtype) for a in (phi, psi, t))

    def inner(x_, y_):
        return 0.5 * jnp.sum((phi_j @ y_ - x_) ** 2)

    def outer(x_, y_):
        return 0.5 * jnp.sum((psi_j @ y_ - t_j) ** 2)

    return SimpleNamespace(
        inner=inner, outer=outer, phi=phi, psi=psi, t=t, x_np=x, x=jnp.asarray(x, dtype),
        null_basis=v[:, m:], lam_max=float(s.max() ** 2),
    )
