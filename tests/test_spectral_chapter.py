"""Spectral view of hypergradient approximations (chapter 3): effective filters, CG's Krylov
filter, and the paper's identities (App. D: damped = proximal response; App. E: unroll =
Neumann at a stationary point, and at the end point of the unroll for a quadratic inner).

Every test compares with an independent known answer: a dense Galerkin (Krylov) solve, a
Lagrange interpolation, a closed-form proximal solution, an explicit matrix power sum.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bilevel_lib import hypergrad, spectral


@pytest.fixture(autouse=True)
def _x64():
    """Every test here checks identities to float64 precision (x64 restored afterwards)."""
    with jax.enable_x64(True):
        yield


def _singular_problem(n_y=7, n_x=3, seed=0):
    """f = 1/2 |Phi y - x|^2 with Phi (n_x, n_y): rank n_x < n_y; F = 1/2 |a.y - 1|^2."""
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(seed), 3)
    phi = jax.random.normal(k1, (n_x, n_y))
    a = jax.random.normal(k2, (n_y,))
    x = jax.random.normal(k3, (n_x,))

    def inner(x, y):
        return 0.5 * jnp.sum((phi @ y - x) ** 2)

    def outer(x, y):
        return 0.5 * (a @ y - 1.0) ** 2 + 0.1 * jnp.sum(x**2)

    return inner, outer, phi, x


def _galerkin(hess, b, steps):
    """Dense Krylov (Galerkin) solve: v in K_steps(H, b) with Q^T (H v - b) = 0."""
    cols = [b]
    for _ in range(steps - 1):
        cols.append(hess @ cols[-1])
    q, _ = np.linalg.qr(np.stack(cols, axis=1))
    return q @ np.linalg.solve(q.T @ hess @ q, q.T @ b)


def _spd(n=6, seed=1):
    lam = jnp.array([0.3, 0.7, 1.1, 2.0, 3.5, 5.0])[:n]
    u, _ = jnp.linalg.qr(jax.random.normal(jax.random.PRNGKey(seed), (n, n)))
    return (u * lam) @ u.T, lam


# --------------------------------------------------------------------------------------------
# effective_filter
# --------------------------------------------------------------------------------------------


def test_effective_filter_of_an_explicit_neumann_sum_is_the_neumann_filter():
    hess, _ = _spd()
    b = jax.random.normal(jax.random.PRNGKey(3), (6,))
    lr, steps = 0.15, 9
    step = jnp.eye(6) - lr * hess
    v = lr * sum(jnp.linalg.matrix_power(step, j) for j in range(steps)) @ b
    lam, g, valid = spectral.effective_filter(hess, b, v)
    assert bool(jnp.all(valid))
    np.testing.assert_allclose(g, spectral.neumann_filter(lam, steps=steps, lr=lr), rtol=1e-12)


def test_effective_filter_masks_directions_without_right_hand_side_weight():
    hess = jnp.diag(jnp.array([1.0, 2.0, 3.0]))
    b = jnp.array([1.0, 0.0, 1.0])
    lam, g, valid = spectral.effective_filter(hess, b, jnp.array([1.0, 5.0, 1.0 / 3.0]))
    assert valid.tolist() == [True, False, True]
    np.testing.assert_allclose(g, [1.0, 0.0, 1.0 / 3.0])


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"hess": jnp.ones((2, 3)), "rhs": jnp.ones(2), "solution": jnp.ones(2)}, "hess"),
        ({"hess": jnp.eye(2), "rhs": jnp.ones(3), "solution": jnp.ones(2)}, "rhs"),
        ({"hess": jnp.eye(2), "rhs": jnp.ones(2), "solution": jnp.ones((2, 1))}, "solution"),
    ],
)
def test_effective_filter_rejects_bad_shapes(kwargs, name):
    with pytest.raises(ValueError, match=name):
        spectral.effective_filter(**kwargs)


# --------------------------------------------------------------------------------------------
# cg_filter
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("steps", [1, 2, 3, 5])
def test_cg_filter_matches_a_dense_galerkin_solve(steps):
    hess, _ = _spd()
    b = jax.random.normal(jax.random.PRNGKey(4), (6,))
    lam, vecs = jnp.linalg.eigh(hess)
    coeffs = vecs.T @ b
    v_ref = _galerkin(np.asarray(hess), np.asarray(b), steps)
    np.testing.assert_allclose(
        spectral.cg_filter(lam, coeffs, steps=steps) * coeffs, vecs.T @ v_ref, atol=1e-10
    )


def test_cg_filter_off_the_spectrum_is_the_interpolating_polynomial():
    """p_K has degree K - 1: its values at K eigenvalues determine it everywhere."""
    hess, _ = _spd()
    b = jax.random.normal(jax.random.PRNGKey(5), (6,))
    lam, vecs = jnp.linalg.eigh(hess)
    coeffs = vecs.T @ b
    steps = 4
    on = np.asarray(spectral.cg_filter(lam, coeffs, steps=steps))
    grid = jnp.linspace(0.0, 6.0, 13)
    poly = np.polyfit(np.asarray(lam[:steps]), on[:steps], steps - 1)
    np.testing.assert_allclose(
        spectral.cg_filter(lam, coeffs, grid, steps=steps), np.polyval(poly, grid), atol=1e-8
    )


def test_cg_filter_reaches_one_over_lambda_after_as_many_steps_as_distinct_eigenvalues():
    lam = jnp.array([0.5, 0.5, 2.0, 4.0])
    coeffs = jnp.array([1.0, -2.0, 0.5, 1.0])
    np.testing.assert_allclose(spectral.cg_filter(lam, coeffs, steps=3), 1.0 / lam, rtol=1e-10)


def test_cg_filter_agrees_with_cg_run_in_the_original_basis():
    hess, _ = _spd()
    b = jax.random.normal(jax.random.PRNGKey(6), (6,))
    v = hypergrad.conjugate_gradient(lambda z: hess @ z, b, steps=3)
    lam, g, _ = spectral.effective_filter(hess, b, v)
    coeffs = jnp.linalg.eigh(hess)[1].T @ b
    np.testing.assert_allclose(spectral.cg_filter(lam, coeffs, steps=3), g, rtol=1e-9)


def test_cg_filter_traced_steps_sweep_matches_static_calls():
    lam = jnp.array([0.2, 1.0, 3.0, 7.0])
    coeffs = jnp.array([1.0, 0.3, -0.5, 0.8])
    grid = jnp.linspace(0.0, 7.0, 5)
    sweep = jax.jit(jax.vmap(lambda k: spectral.cg_filter(lam, coeffs, grid, steps=k,
                                                           max_steps=4)))(jnp.arange(1, 5))
    for k in range(1, 5):
        np.testing.assert_allclose(sweep[k - 1], spectral.cg_filter(lam, coeffs, grid, steps=k),
                                   rtol=1e-12)


def test_cg_filter_on_an_inconsistent_singular_system_stays_finite_and_misses_pinv():
    """b has weight on lambda = 0: CG breaks down; the guard freezes it, short of 1/lambda."""
    lam = jnp.array([0.0, 0.1, 1.0, 5.0])
    coeffs = jnp.array([0.2, 0.3, -0.4, 1.0])
    g = spectral.cg_filter(lam, coeffs, steps=12)
    assert bool(jnp.all(jnp.isfinite(g)))
    assert float(jnp.max(jnp.abs(lam[1:] * g[1:] - 1.0))) > 1e-3
    # The consistent system (weight removed from the null space) is solved exactly.
    g_cons = spectral.cg_filter(lam, coeffs.at[0].set(0.0), steps=3)
    np.testing.assert_allclose(lam[1:] * g_cons[1:], 1.0, rtol=1e-10)


def test_cg_filter_rejects_bad_shapes():
    with pytest.raises(ValueError, match="coeffs"):
        spectral.cg_filter(jnp.ones(3), jnp.ones(2), steps=1)
    with pytest.raises(ValueError, match="lam"):
        spectral.cg_filter(jnp.ones((2, 2)), jnp.ones((2, 2)), steps=1)
    with pytest.raises(ValueError, match="at"):
        spectral.cg_filter(jnp.ones(2), jnp.ones(2), jnp.ones((2, 2)), steps=1)


# --------------------------------------------------------------------------------------------
# Paper identities
# --------------------------------------------------------------------------------------------


def test_damped_hypergradient_is_the_gradient_through_the_proximal_solution():
    """App. D: y_eps(x) = argmin f + eps/2 |y - y'|^2 has Jacobian -(H + eps I)^{-1} B."""
    inner, outer, phi, x = _singular_problem()
    eps = 0.25
    y_ref = jnp.linspace(-1.0, 1.0, phi.shape[1])

    def y_prox(x):   # closed form of the proximal quadratic
        return jnp.linalg.solve(phi.T @ phi + eps * jnp.eye(phi.shape[1]), phi.T @ x + eps * y_ref)

    y = y_prox(x)
    hess, mixed = hypergrad.hessian_and_mixed(inner, x, y)
    np.testing.assert_allclose(jax.jacobian(y_prox)(x),
                               -jnp.linalg.solve(hess + eps * jnp.eye(len(y)), mixed), atol=1e-12)
    total = jax.grad(lambda x: outer(x, y_prox(x)))(x)
    np.testing.assert_allclose(hypergrad.damped(inner, outer, x, y, eps=eps), total, atol=1e-10)


def test_unroll_equals_neumann_at_a_stationary_point_and_at_the_end_point_elsewhere():
    """App. E; and for a quadratic inner, unroll from any y = Neumann at the K-th iterate."""
    inner, outer, phi, x = _singular_problem()
    lr, steps = 0.05, 30
    y_star = jnp.linalg.pinv(phi) @ x
    np.testing.assert_allclose(
        hypergrad.unroll(inner, outer, x, y_star, steps=steps, lr=lr),
        hypergrad.neumann(inner, outer, x, y_star, steps=steps, lr=lr), atol=1e-12)
    y0 = jnp.zeros(phi.shape[1])
    y_k = y0
    for _ in range(steps):
        y_k = y_k - lr * jax.grad(inner, argnums=1)(x, y_k)
    h_unroll = hypergrad.unroll(inner, outer, x, y0, steps=steps, lr=lr)
    assert float(jnp.max(jnp.abs(h_unroll - hypergrad.neumann(inner, outer, x, y0, steps=steps,
                                                             lr=lr)))) > 1e-3
    np.testing.assert_allclose(
        h_unroll, hypergrad.neumann(inner, outer, x, y_k, steps=steps, lr=lr), atol=1e-12)


def test_neumann_raises_when_lr_is_past_two_over_lambda_max():
    inner, outer, phi, x = _singular_problem()
    y = jnp.linalg.pinv(phi) @ x
    lam_max = float(spectral.max_eigenvalue(inner, x, y, steps=300))
    np.testing.assert_allclose(lam_max, jnp.linalg.eigvalsh(phi.T @ phi)[-1], rtol=1e-8)
    with pytest.raises(FloatingPointError, match="diverging"):
        hypergrad.neumann(inner, outer, x, y, steps=60, lr=2.2 / lam_max)
