"""bilevel_lib.tasks.error_rates against known answers.

Known answers: eigenvalues of diagonal matrices for the rates; the ridge closed form
(``tasks.ridge``) for the estimators' convergence at rate q; Newton's optimality condition and
the dense implicit formula for the logistic task; the exact limit of SID; a deterministic
recursion for the stochastic fixed-point solver; the bias/variance identity.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bilevel_lib import blo, hypergrad
from bilevel_lib.tasks import error_rates as er
from bilevel_lib.tasks import ridge


@pytest.fixture(autouse=True)
def _x64():
    with jax.enable_x64(True):
        yield


def test_contraction_constants_of_a_diagonal_hessian():
    c = er.contraction_constants(jnp.diag(jnp.array([1.0, 2.0, 9.0])), 0.2)
    assert c["q"] == pytest.approx(0.8)          # max(|1 - 0.2|, |1 - 0.4|, |1 - 1.8|)
    assert c["kappa"] == pytest.approx(9.0)
    assert c["p"] == pytest.approx(0.5)          # (3 - 1) / (3 + 1)
    with pytest.raises(ValueError, match="positive definite"):
        er.contraction_constants(jnp.diag(jnp.array([0.0, 1.0])), 0.1)


def test_aid_fp_error_on_ridge_is_within_the_q_power_bound():
    data = ridge.make_ridge(jax.random.PRNGKey(3), n_train=30, n_val=20, dim=5,
                            dtype=jnp.float64)
    inner, outer = ridge.ridge_objectives(data)
    lam = jnp.array(0.3)
    a = data.X.T @ data.X / 30 + lam * jnp.eye(5)
    lr = 1.0 / float(jnp.linalg.eigvalsh(a)[-1])
    q = er.contraction_constants(a, lr)["q"]
    g = ridge.ridge_hypergrad(data, lam)
    w = ridge.ridge_solution(data, lam)
    f_y = data.X_val.T @ (data.X_val @ w - data.y_val) / 20
    for k in (10, 20, 40):
        err = float(hypergrad.neumann(inner, outer, lam, w, steps=k, lr=lr) - g)
        # At the exact solution v_k = A^{-1} (I - (I - lr A)^k) F_y, so the FP error is
        # w^T A^{-1} (I - lr A)^k F_y, at most |w| |F_y| q^k / mu_min.
        m = jnp.linalg.matrix_power(jnp.eye(5) - lr * a, k)
        closed = float(w @ jnp.linalg.solve(a, m @ f_y))
        assert err == pytest.approx(closed, rel=1e-8, abs=1e-14)
        mu_min = float(jnp.linalg.eigvalsh(a)[0])
        assert abs(err) <= float(jnp.linalg.norm(w) * jnp.linalg.norm(f_y)) * q**k / mu_min


def test_logistic_solution_is_stationary_and_matches_exact_hypergradient():
    data = er.make_logistic(jax.random.PRNGKey(0), n_train=40, n_val=30, dim=4)
    inner, outer = er.logistic_objectives(data)
    lam = jnp.array(0.05)
    w = er.logistic_solution(data, lam)
    assert float(jnp.max(jnp.abs(jax.grad(inner, argnums=1)(lam, w)))) < 1e-12
    # Dense implicit formula: dF/dlam = -w^T H^{-1} grad E (B = w for the penalty lam/2 |w|^2).
    h = jax.hessian(inner, argnums=1)(lam, w)
    e_w = jax.grad(outer, argnums=1)(lam, w)
    expected = -w @ jnp.linalg.solve(h, e_w)
    np.testing.assert_allclose(hypergrad.exact(inner, outer, lam, w), expected, rtol=1e-10)
    # Gradient descent (the ITD/AID inner solver) reaches the same point.
    w_gd = blo.inner_gd(inner, lam, jnp.zeros(4), lr=1.0, steps=3000)
    np.testing.assert_allclose(w_gd, w, atol=1e-8)


def test_sid_exact_limit_and_convergence():
    data = er.make_logistic(jax.random.PRNGKey(1), n_train=60, n_val=40, dim=3)
    x = jnp.log(jnp.array(0.1))
    inner, outer = er.logistic_objectives(data, log_lam=True)
    g = hypergrad.exact(inner, outer, x, er.logistic_solution(data, x, log_lam=True))
    opts = dict(lr=1.0, beta=20.0, gamma=20.0)
    h0 = er.sid(data, x, jax.random.PRNGKey(0), t=None, k=None, J=None, **opts)
    np.testing.assert_allclose(h0, g, rtol=1e-10)
    # With many stochastic steps and a large minibatch the estimate is close (MSE -> 0).
    keys = jax.random.split(jax.random.PRNGKey(2), 16)
    est = jax.vmap(lambda k: er.sid(data, x, k, t=3000, k=3000, J=2000, **opts))(keys)
    mse, bias2, var = er.mse_split(est, g)
    assert float(mse) < 0.05 * float(g) ** 2
    np.testing.assert_allclose(mse, bias2 + var, rtol=1e-10)


def test_stochastic_fixed_point_deterministic_recursion_and_masking():
    g = lambda z, k: z - 2.0
    z = er.stochastic_fixed_point(g, jnp.zeros(1), jax.random.PRNGKey(0), steps=4,
                                  max_steps=10, lr=0.5, beta=1.0, gamma=1.0)
    expected = 0.0
    for j in range(4):
        expected = expected - 0.5 / (1.0 + j) * (expected - 2.0)
    np.testing.assert_allclose(z, [expected], rtol=1e-12)


def _sid_count(data, x, key, name, other, opts, n, **kw):
    return er.sid(data, x, key, J=None, **{name: n, other: None}, **kw, **opts)


def test_sid_sweep_over_counts_with_and_without_a_static_loop_length(x64):
    # The t- and k-step iterates are prefixes of longer runs (same key and step size at step
    # j), so a lax.map over counts with exact-length loops equals the masked vmap, and both
    # equal separate runs with a concrete count.
    data = er.make_logistic(jax.random.PRNGKey(1), n_train=60, n_val=40, dim=3)
    x, key = jnp.log(jnp.array(0.1)), jax.random.PRNGKey(3)
    opts = dict(lr=1.0, beta=20.0, gamma=20.0, batch=4)
    counts = jnp.array([1, 4, 9])
    for name, other in (("t", "k"), ("k", "t")):
        one = functools.partial(_sid_count, data, x, key, name, other, opts)
        masked = jax.jit(jax.vmap(functools.partial(one, **{f"max_{name}": 9})))(counts)
        mapped = jax.jit(functools.partial(jax.lax.map, one))(counts)
        single = [float(one(int(n))) for n in counts]
        np.testing.assert_allclose(np.asarray(mapped), single, rtol=1e-12)
        np.testing.assert_allclose(np.asarray(masked), single, rtol=1e-12)
        assert len(set(single)) == 3


def test_sfp_step_sizes_meet_the_rate_conditions():
    # Known answer: L = 4, mu = 1 gives alpha = 1/4, q = 3/4, 1 - q^2 = 7/16.
    s = er.sfp_step_sizes(4.0, 1.0)
    assert s["lr"] == pytest.approx(0.25)
    assert s["beta"] == pytest.approx(2.0 * 16.0 / 7.0)
    assert s["gamma"] == pytest.approx(4.0 * 16.0 / 7.0)
    # q is the contraction factor of the gradient step on a Hessian with spectrum [mu, L].
    q = er.contraction_constants(jnp.diag(jnp.array([1.0, 4.0])), s["lr"])["q"]
    assert s["beta"] > 1.0 / (1.0 - q**2)
    # Traced inputs (the chapter recomputes the steps at every outer iterate).
    lam = jnp.array([0.1, 0.01])
    b = jax.jit(jax.vmap(lambda m: er.sfp_step_sizes(1.0 + m, m)["beta"]))(lam)
    np.testing.assert_allclose(b, 2.0 / (1.0 - (1.0 - lam / (1.0 + lam)) ** 2), rtol=1e-12)


def test_log_schedule_and_inexact_descent():
    s = jnp.arange(6)
    np.testing.assert_array_equal(er.log_schedule(s, 3.0),
                                  np.ceil(3.0 * np.log(np.arange(6) + 1.0) - 1e-9))
    xs, hs = er.inexact_descent(lambda x, s: x - 1.0, jnp.array(3.0), lr=0.5, steps=4)
    np.testing.assert_allclose(xs, [3.0, 2.0, 1.5, 1.25])
    np.testing.assert_allclose(hs, xs - 1.0)


def test_scaled_ridge_null_space_moves_with_x():
    data = ridge.make_ridge(jax.random.PRNGKey(0), n_train=3, n_val=4, dim=5,
                            dtype=jnp.float64)
    inner, _ = er.scaled_ridge_objectives(data, 0.0)
    hess = lambda x: jax.hessian(inner, argnums=1)(x, jnp.zeros(5))
    h1, h2 = hess(jnp.ones(5)), hess(jnp.arange(1.0, 6.0))
    assert int(jnp.linalg.matrix_rank(h1)) == 3
    n1 = jnp.linalg.eigh(h1)[1][:, :2]          # null space at x = 1
    assert float(jnp.linalg.norm(h2 @ n1)) > 1e-3
    inner_mu, _ = er.scaled_ridge_objectives(data, 0.1)
    assert float(jnp.linalg.eigvalsh(jax.hessian(inner_mu, argnums=1)(
        jnp.ones(5), jnp.zeros(5)))[0]) == pytest.approx(0.1)


def test_mse_split_identity():
    est = jnp.array([[1.0, 0.0], [3.0, 2.0]])
    mse, bias2, var = er.mse_split(est, jnp.array([0.0, 0.0]))
    assert float(mse) == pytest.approx(7.0)
    assert float(bias2) == pytest.approx(5.0)
    assert float(var) == pytest.approx(2.0)


def test_accuracy_and_loss():
    X = jnp.array([[1.0, 0.0], [0.0, 1.0]])
    assert float(er.accuracy(jnp.array([1.0, -1.0]), X, jnp.array([1.0, -1.0]))) == 1.0
    assert float(er.logistic_loss(jnp.zeros(2), X, jnp.ones(2))) == pytest.approx(np.log(2))


def test_inexact_descent_masked_sweep_matches_unmasked_runs():
    # Known answer: descent on x^2 / 2 with step 1/2 halves x; steps s >= S freeze x.
    est = lambda x, s: x
    for S in (1, 3, 5):
        xs, hs = er.inexact_descent(est, jnp.array(8.0), lr=0.5, steps=S, max_steps=5)
        expected = [8.0 * 0.5 ** min(s, S) for s in range(5)]
        np.testing.assert_allclose(xs, expected)
        np.testing.assert_allclose(hs, [x if s < S else 0.0 for s, x in enumerate(expected)])
    traced = jax.jit(jax.vmap(lambda S: er.inexact_descent(est, jnp.array(8.0), lr=0.5,
                                                           steps=S, max_steps=5)[0]))
    np.testing.assert_allclose(traced(jnp.array([2, 4]))[:, -1], [2.0, 0.5])


def test_running_mean_sq_schedule_iterations_and_samples():
    g = jnp.array([[1.0, 2.0], [2.0, 0.0], [0.0, 0.0]])
    np.testing.assert_allclose(er.running_mean_sq(g), [5.0, 4.5, 3.0])
    # t_s = ceil(kappa log(s + 1)) with kappa = 3: 0, 3, 4, 5 (by hand); N(S) = 2 sum t_s.
    np.testing.assert_array_equal(er.schedule_iterations(er.log_schedule(jnp.arange(4), 3.0)),
                                  [0, 6, 14, 24])
    # N(S) grows like 2 kappa S log S.
    big = float(er.schedule_iterations(er.log_schedule(jnp.arange(100000), 5.0))[-1])
    assert big / (2 * 5.0 * 1e5 * np.log(1e5)) == pytest.approx(1.0, abs=0.1)
    np.testing.assert_array_equal(er.sihd_samples(np.array([2, 5]), 1.5, batch=3),
                                  [2 * 3 * 7, 5 * 8 * 7])


def test_loglog_slope_of_power_laws():
    n = np.array([1.0, 4.0, 16.0, 64.0])
    assert er.loglog_slope(n, 3.0 * n**-0.5) == pytest.approx(-0.5, abs=1e-12)
    assert er.loglog_slope(n, 2.0 * n**1.5) == pytest.approx(1.5, abs=1e-12)
    with pytest.raises(ValueError, match="positive"):
        er.loglog_slope(n, -n)


def test_linear_map_sigma2_against_enumerated_minibatches():
    # Known answer for a batch of one example: enumerate the n equally likely Hessians.
    data = er.make_logistic(jax.random.PRNGKey(5), n_train=12, n_val=4, dim=3)
    lam, w = 0.05, jnp.array([0.3, -0.2, 0.5])
    inner, _ = er.logistic_objectives(data)
    h_full = np.asarray(jax.hessian(inner, argnums=1)(jnp.array(lam), w))
    def hess_i(i):
        return np.asarray(jax.hessian(er.logistic_loss)(w, data.X[i:i + 1], data.y[i:i + 1]))

    h_i = np.stack([hess_i(i) + lam * np.eye(3) for i in range(12)])

    def ratio(v):        # Var[H_zeta v] / ||H v||^2
        hv = h_i @ v
        return float(np.mean(np.sum((hv - hv.mean(0)) ** 2, axis=1)) / np.sum((h_full @ v) ** 2))

    s2 = er.linear_map_sigma2(data, jnp.array(lam), w, batch=1, log_lam=False)
    rng = np.random.default_rng(0)
    assert max(ratio(v) for v in rng.normal(size=(200, 3))) <= s2 * (1 + 1e-9)
    # The maximizer is v = H^{-1} u with u the top eigenvector of H^{-1} M H^{-1}.
    cov = np.mean(np.einsum("nij,nkj->nik", h_i, h_i), 0) - h_full @ h_full
    hinv = np.linalg.inv(h_full)
    top = np.linalg.eigh(hinv @ cov @ hinv)[1][:, -1]
    assert ratio(hinv @ top) == pytest.approx(s2, rel=1e-9)
    # Batch b divides the variance by b; log_lam only reparametrizes lambda.
    s2_4 = er.linear_map_sigma2(data, jnp.log(lam), w, batch=4)
    assert s2_4 == pytest.approx(s2 / 4, rel=1e-9)
