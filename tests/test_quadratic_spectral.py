"""bilevel_lib.quadratic and bilevel_lib.spectral against known answers.

Known answers: long gradient-descent runs written in NumPy (Lemma C.1), the defining properties
of closest points (a minimizer, and nothing closer among the other minimizers), explicit
geometric sums, ``np.linalg.eigvalsh``, and the hypergradient formulas of the estimators.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import make_linear_quadratic
from jax.flatten_util import ravel_pytree

from bilevel_lib import hypergrad as hg
from bilevel_lib import quadratic, spectral


def _singular_psd(seed, n=6, eigenvalues=(0.0, 0.0, 0.0, 0.5, 1.0, 2.0)):
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    lam = np.asarray(eigenvalues, float)
    return (q * lam) @ q.T, q[:, lam == 0], q[:, lam > 0], rng


# ---------------------------------------------------------------------------------------------
# Lemma C.1 and closest points
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("lr_times_lam_max", [0.5, 1.0, 1.9])
def test_lemma_c1_gradient_descent_limit(x64, lr_times_lam_max):
    hess, null, rng_basis, rng = _singular_psd(0)
    b = hess @ rng.standard_normal(6)  # b in range(H): bounded below
    y0 = 3.0 * rng.standard_normal(6)
    lr = lr_times_lam_max / 2.0  # lambda_max = 2
    y = y0.copy()
    for _ in range(2000):  # slowest rate max(|1 - lr*0.5|, |1 - lr*2|) <= 0.95: ~1e-45
        y = y - lr * (hess @ y + b)
    got = np.asarray(quadratic.closest_minimizer(hess, b, y0))
    np.testing.assert_allclose(got, y, atol=1e-10)
    np.testing.assert_allclose(hess @ got + b, 0.0, atol=1e-10)  # a minimizer ...
    # ... whose null-space coordinates are those of y0: GD never moves along null(H) ...
    np.testing.assert_allclose(null.T @ got, null.T @ y0, atol=1e-10)
    # ... so it is the closest minimizer: every other one is y* + N z.
    f = lambda v: 0.5 * v @ hess @ v + b @ v
    for _ in range(5):
        other = got + null @ rng.standard_normal(null.shape[1])
        assert abs(f(other) - f(got)) < 1e-10
        assert np.linalg.norm(other - y0) > np.linalg.norm(got - y0)


def test_lemma_c1_diverges_past_two_over_lambda_max(x64):
    hess, _, _, rng = _singular_psd(1)
    b, y0 = hess @ rng.standard_normal(6), rng.standard_normal(6)
    y = y0.copy()
    for _ in range(200):
        y = y - (2.2 / 2.0) * (hess @ y + b)
    # GD does not reach the closed form when lr > 2 / lambda_max: the lemma's condition matters.
    assert np.linalg.norm(y - np.asarray(quadratic.closest_minimizer(hess, b, y0))) > 1e3


def test_closest_solution_of_underdetermined_least_squares(x64):
    rng = np.random.default_rng(2)
    a, t, y0 = rng.standard_normal((3, 7)), rng.standard_normal(3), rng.standard_normal(7)
    got = np.asarray(quadratic.closest_solution(a, t, y0))
    np.testing.assert_allclose(a @ got, t, atol=1e-10)  # a solution (consistent system)
    null = np.linalg.svd(a)[2][3:].T
    np.testing.assert_allclose(null.T @ (got - y0), 0.0, atol=1e-10)  # y* - y0 in row space
    # Equivalently, Lemma C.1 on f = 1/2 |A y - t|^2: H = A^T A, b = -A^T t.
    np.testing.assert_allclose(quadratic.closest_minimizer(a.T @ a, -a.T @ t, y0), got,
                               atol=1e-9)


def test_project_hyperplane_and_kaczmarz(x64):
    rng = np.random.default_rng(3)
    w, a, target = rng.standard_normal(4), rng.standard_normal(4), 1.7
    p = np.asarray(quadratic.project_hyperplane(w, a, target))
    np.testing.assert_allclose(a @ p, target, atol=1e-12)
    step = p - w
    np.testing.assert_allclose(step - (step @ a) / (a @ a) * a, 0.0, atol=1e-12)  # along a

    rows, targets = rng.standard_normal((3, 5)), rng.standard_normal(3)
    w0 = rng.standard_normal(5)
    iterates = np.asarray(quadratic.kaczmarz(w0, rows, targets, sweeps=40))
    assert iterates.shape == (3 * 40 + 1, 5)
    np.testing.assert_allclose(iterates[0], w0)
    np.testing.assert_allclose(iterates[1], quadratic.project_hyperplane(w0, rows[0],
                                                                         targets[0]))
    # Cycling through the solution sets converges to the point of their intersection closest
    # to w0 (full warm start).
    want = w0 + np.linalg.pinv(rows) @ (targets - rows @ w0)
    np.testing.assert_allclose(iterates[-1], want, atol=1e-8)


def test_min_norm_outer_solution_characterisation(x64):
    rng = np.random.default_rng(4)
    phi, psi = rng.standard_normal((3, 7)), rng.standard_normal((2, 7))
    t, x0, y0 = rng.standard_normal(2), rng.standard_normal(3), rng.standard_normal(7)
    x_star, y_star = map(np.asarray, quadratic.min_norm_outer_solution(phi, psi, t, x0, y0))
    phi_pinv = np.linalg.pinv(phi)
    m = psi @ phi_pinv
    t_eff = t - psi @ (y0 - phi_pinv @ phi @ y0)
    # The outer objective of x (Lemma C.2) is 1/2 |M x - t'|^2; x* minimizes it ...
    np.testing.assert_allclose(m.T @ (m @ x_star - t_eff), 0.0, atol=1e-10)
    # ... and x* - x0 lies in row(M), so no other minimizer is closer to x0.
    null_m = np.linalg.svd(m)[2][2:].T
    np.testing.assert_allclose(null_m.T @ (x_star - x0), 0.0, atol=1e-10)
    # y* is the inner solution closest to y0 at x*, and it realises the outer loss.
    np.testing.assert_allclose(y_star, quadratic.closest_solution(phi, x_star, y0), atol=1e-10)
    np.testing.assert_allclose(psi @ y_star - t, m @ x_star - t_eff, atol=1e-10)


# ---------------------------------------------------------------------------------------------
# Spectral filters
# ---------------------------------------------------------------------------------------------


def test_filters_reproduce_hypergradients(x64):
    p = make_linear_quadratic(30, rank=4)
    lr, steps, eps = 0.7 / p.lam_max, 9, 0.05

    def through(filt):
        return p.F_x - p.B.T @ np.asarray(spectral.apply_filter(p.H, p.F_y, filt))

    estimates = jax.jit(lambda x, y: {
        "exact": hg.exact(p.inner, p.outer, x, y),
        "neumann": hg.neumann(p.inner, p.outer, x, y, steps=steps, lr=lr),
        "damped": hg.damped(p.inner, p.outer, x, y, eps=eps, method="dense"),
    })(p.x, p.y)
    filters = {
        "exact": spectral.pinv_filter,
        "neumann": functools.partial(spectral.neumann_filter, steps=steps, lr=lr),
        "damped": functools.partial(spectral.damped_filter, eps=eps),
    }
    for name, filt in filters.items():
        estimate = np.asarray(estimates[name])
        np.testing.assert_allclose(through(filt), estimate, rtol=1e-9, atol=1e-11, err_msg=name)
    # pinv filter == Moore-Penrose pseudoinverse; a 2-D rhs is filtered column by column.
    np.testing.assert_allclose(spectral.apply_filter(p.H, np.eye(6), spectral.pinv_filter),
                               np.linalg.pinv(p.H), atol=1e-10)


def test_neumann_filter_values(x64):
    lam = np.array([0.0, 1e-14, 0.1, 1.0, 1.9, 3.0])
    lr = 0.5
    for steps in (0, 1, 5, 40):
        want = np.array([lr * sum((1 - lr * v) ** j for j in range(steps)) for v in lam])
        got = spectral.neumann_filter(jnp.asarray(lam), steps=steps, lr=lr)
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-14)
        assert float(got[0]) == pytest.approx(lr * steps, rel=1e-14)  # g_K(0) = lr * K
    # Array-valued steps broadcast: a sweep over K in one call.
    swept = spectral.neumann_filter(jnp.asarray(lam)[None, :], steps=jnp.arange(4)[:, None],
                                    lr=lr)
    assert swept.shape == (4, 6)
    np.testing.assert_allclose(swept[3], spectral.neumann_filter(jnp.asarray(lam), steps=3,
                                                                 lr=lr))
    # For 0 < lr * lam < 2 the filter tends to the pinv filter 1/lam.
    big = spectral.neumann_filter(jnp.asarray(lam[2:5]), steps=2000, lr=lr)
    np.testing.assert_allclose(big, 1 / lam[2:5], rtol=1e-10)


def test_damped_filter_and_matching_eps(x64):
    lam = jnp.array([0.0, 0.5, 4.0])
    np.testing.assert_allclose(spectral.damped_filter(lam, eps=0.25), [4.0, 4 / 3, 1 / 4.25])
    assert spectral.pinv_filter(lam)[0] == 0.0
    for steps, lr in ((10, 0.1), (3, 0.7), (50, 0.01)):
        eps = spectral.matching_eps(steps=steps, lr=lr)
        assert eps == pytest.approx(1.0 / (lr * steps))
        # Matched at lambda = 0: both filters equal lr * K there.
        np.testing.assert_allclose(spectral.damped_filter(0.0, eps=eps),
                                   spectral.neumann_filter(jnp.zeros(1), steps=steps, lr=lr)[0],
                                   rtol=1e-12)


def test_max_eigenvalue_matches_eigvalsh(x64):
    p = make_linear_quadratic(31, rank=5)
    got = spectral.max_eigenvalue(p.inner, p.x, p.y)
    np.testing.assert_allclose(got, np.linalg.eigvalsh(p.H).max(), rtol=1e-8)

    # A non-quadratic inner with pytree y: compared with the dense Hessian's eigenvalues.
    def inner(x, y):
        return jnp.sum(jnp.cosh(y["a"] - x)) + jnp.sum(jnp.exp(0.3 * y["b"])) + y["a"] @ y["b"]

    x = jnp.array([0.1, -0.2, 0.3])
    y = {"a": jnp.array([2.5, 0.5, -0.5]), "b": jnp.array([0.2, 1.0, 2.0])}
    y_flat, unravel = ravel_pytree(y)
    dense = jax.jit(jax.hessian(lambda v: inner(x, unravel(v))))(y_flat)
    lam = np.linalg.eigvalsh(np.asarray(dense))
    assert lam[-1] - lam[-2] > 0.1  # a spectral gap, so 100 power iterations converge
    np.testing.assert_allclose(spectral.max_eigenvalue(inner, x, y, steps=300), lam[-1],
                               rtol=1e-8)
